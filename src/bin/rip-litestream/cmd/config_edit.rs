//! `config edit`: the newest generation in the user's editor, validated as `config save`
//! validates, saved as a new generation unless another one was saved meanwhile. The plaintext
//! lives only in a [`PrivateFile`], gone on every way out.

use std::io::IsTerminal;

use restinpieces_litestream::edit::{self, EditSignals, EditorEnd, PrivateFile};
use restinpieces_litestream::redact::Redactor;
use restinpieces_litestream::{binary, runtime, CheckedSave, ConfigStore, Error};
use zeroize::Zeroizing;

use super::config::{litestream_refusal, say_saved};
use crate::args::{strictness, SaveArgs};
use crate::daemon::block_on;

pub(crate) fn edit(
    store: &ConfigStore,
    scope: &str,
    description: &str,
    strict: bool,
    save: &SaveArgs,
) -> Result<u8, Error> {
    // No core dump (nor ptrace by another process of this user) while the plaintext is held.
    #[cfg(target_os = "linux")]
    if let Err(e) = nix::sys::prctl::set_dumpable(false) {
        tracing::warn!(error = %e, "cannot turn core dumps off for this edit");
    }
    let base = runtime::private_base()?; // sweeps what a killed edit left
    let stored = store.load(scope, 0).map_err(|e| match e {
        Error::NotFound { .. } => Error::Usage(format!(
            "no config saved for scope `{scope}` in {}: create one with `rip-litestream init --replica DIR` or `rip-litestream config save litestream.yml`, then edit it",
            store.db_path().display()
        )),
        other => other,
    })?;
    let checker = save.checker()?;
    let (editor, from) = edit::editor_command()?;
    tracing::debug!(editor = %editor.join(" "), from, "editor");
    let session = Session {
        store,
        scope,
        description,
        strict,
        checker,
        editor,
        expected: stored.id,
        format: stored.format.clone(),
        original: stored.plaintext,
    };
    block_on(session.run(&base))
}

struct Session<'a> {
    store: &'a ConfigStore,
    scope: &'a str,
    description: &'a str,
    strict: bool,
    checker: Option<binary::LitestreamBinary>,
    editor: Vec<String>,
    /// The newest row when the edit began: a save finds it still newest, or is refused.
    expected: i64,
    format: String,
    original: Zeroizing<Vec<u8>>,
}

impl Session<'_> {
    async fn run(self, base: &std::path::Path) -> Result<u8, Error> {
        let mut signals = EditSignals::new()?;
        let file = PrivateFile::create(base, &self.format, &self.original)?;
        // What the file held when the editor last opened it, errors included.
        let mut offered: Zeroizing<Vec<u8>> = self.original.clone();
        let mut failed = false;
        loop {
            match edit::run_editor(&self.editor, file.path(), &mut signals).await? {
                EditorEnd::Signal(name) => return Ok(abandoned(name)),
                EditorEnd::Exited(status) if !status.success() => {
                    say!(
                        "the editor `{}` exited with {status}: nothing saved",
                        self.editor.join(" ")
                    );
                    return Ok(1);
                }
                EditorEnd::Exited(_) => {}
            }
            let raw = file.read()?;
            if failed && *raw == *offered {
                say!("error: saved unchanged after the errors above: gave up, nothing saved");
                return Ok(2);
            }
            let text = edit::strip_errors(&raw);
            if *text == **self.original {
                say!("no changes: nothing saved");
                return Ok(0);
            }
            let problems = self.problems(text).await?;
            if let Some(name) = signals.pending().await {
                return Ok(abandoned(name));
            }
            if problems.is_empty() {
                return self.save(text);
            }
            let redactor = Redactor::from_yaml(&String::from_utf8_lossy(text));
            let problems: Vec<String> = problems
                .iter()
                .map(|p| redactor.redact(p).into_owned())
                .collect();
            say!("error: the edited config was not saved:");
            for p in &problems {
                for line in p.lines() {
                    say!("  {line}");
                }
            }
            if !std::io::stdin().is_terminal() {
                say!("stdin is not a terminal, so the editor is not opened again: nothing saved");
                return Ok(2);
            }
            say!("opening the editor again (the errors are at the top of the file)");
            offered = edit::with_errors(text, &problems);
            file.write(&offered)?;
            failed = true;
        }
    }

    /// Our verdict, then litestream's: the reasons not to save (none: it may be saved).
    async fn problems(&self, text: &[u8]) -> Result<Vec<String>, Error> {
        match super::config::parse_redacted(text, strictness(self.strict)) {
            Ok(config) => config.log_warnings(),
            Err(e) => return Ok(vec![e.to_string()]),
        }
        let Some(bin) = &self.checker else {
            return Ok(Vec::new());
        };
        Ok(litestream_refusal(bin, text).await?.into_iter().collect())
    }

    fn save(&self, text: &[u8]) -> Result<u8, Error> {
        let saved = self.store.save_if_newest(
            self.scope,
            text,
            &self.format,
            self.description,
            Some(self.expected),
        )?;
        match saved {
            CheckedSave::Saved(id) => say_saved(self.store, self.scope, id, "saved"),
            CheckedSave::Superseded(newest) => {
                let newest = newest.map_or("none".to_string(), |id| format!("id {id}"));
                say!(
                    "error: the edit was not saved: the newest generation of `{}` was id {} when the edit began and is {newest} now (saved meanwhile); re-run `rip-litestream config edit` to edit it",
                    self.scope,
                    self.expected
                );
                Ok(1)
            }
        }
    }
}

fn abandoned(signal: &str) -> u8 {
    say!("{signal}: the edit was abandoned, nothing saved, the decrypted file removed");
    1
}
