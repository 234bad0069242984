//! age key files: reading identities (`age-keygen` format, parsed by age's own
//! [`age::IdentityFile`]), generating a new one, the permission check, and whom saves encrypt to
//! ([`Recipients`]).
//!
//! The key file is read each time it is needed, never cached for the life of the process.

use std::fs;
use std::io::{BufRead, ErrorKind, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::str::FromStr;

use age::x25519;
use zeroize::Zeroizing;

use crate::error::{Error, Result};

/// The identities of a key file, in file order. The first one's recipient is used to encrypt.
pub struct KeyRing {
    identities: Vec<x25519::Identity>,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRing")
            .field("identities", &self.identities.len())
            .finish_non_exhaustive()
    }
}

impl KeyRing {
    /// Reads the identities of `path` as age itself does ([`age::IdentityFile`]: lines
    /// `AGE-SECRET-KEY-1...`, blank lines and lines starting with `#` skipped, nothing trimmed),
    /// so a file `age -d -i` rejects is rejected here too. Warns (through `tracing`) when the
    /// file is readable by group or others.
    pub fn read(path: &Path) -> Result<Self> {
        let meta = match fs::metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                return Err(Error::KeyMissing { path: path.into() })
            }
            Err(e) => return Err(unreadable(path, e.to_string())),
        };
        if meta.is_dir() {
            return Err(unreadable(path, "it is a directory".into()));
        }
        warn_if_shared(path, meta.permissions().mode());
        let text = Zeroizing::new(fs::read(path).map_err(|e| unreadable(path, e.to_string()))?);
        Self::parse(path, &text)
    }

    /// The identities of a key file's bytes `text` (`path` only names it in errors).
    fn parse(path: &Path, text: &[u8]) -> Result<Self> {
        let invalid = |reason: String| Error::KeyInvalid {
            path: path.into(),
            reason,
        };
        if std::str::from_utf8(text).is_err() {
            return Err(invalid("is not text".into()));
        }
        // age's own verdict first: what it refuses, we refuse.
        if let Err(e) = age::IdentityFile::from_buffer(text) {
            return Err(invalid(why_refused(text, &e.to_string())));
        }
        // It accepted X25519 identities only (plugins are not built in): the same lines again,
        // as values we can name the recipients of. age-rs takes a lower-case key that age (Go,
        // restinpieces, `age -d`) refuses: refused here, so both sides read the same files.
        let mut identities = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = Zeroizing::new(line.map_err(|e| invalid(e.to_string()))?);
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if !line.starts_with("AGE-SECRET-KEY-1") {
                return Err(invalid(format!(
                    "has a lower-case key on line {} (age and restinpieces refuse it): write it in upper case, as age-keygen does",
                    n + 1
                )));
            }
            let identity = x25519::Identity::from_str(&line)
                .map_err(|e| invalid(format!("has an unreadable line {}: {e}", n + 1)))?;
            identities.push(identity);
        }
        if identities.is_empty() {
            return Err(invalid("holds no identity".into()));
        }
        Ok(KeyRing { identities })
    }

    /// The recipient (public key) of the first identity: what new configs are encrypted to.
    pub fn recipient(&self) -> x25519::Recipient {
        self.identities[0].to_public()
    }

    /// A ring of these identities.
    pub(crate) fn from_identities(identities: Vec<x25519::Identity>) -> Self {
        KeyRing { identities }
    }

    /// The first identity: the one new configs are encrypted to.
    pub(crate) fn first(&self) -> &x25519::Identity {
        &self.identities[0]
    }

    /// Each identity, in file order.
    pub(crate) fn each(&self) -> &[x25519::Identity] {
        &self.identities
    }

    /// All identities, for decryption.
    pub fn identities(&self) -> impl Iterator<Item = &dyn age::Identity> {
        self.identities.iter().map(|i| i as &dyn age::Identity)
    }
}

fn unreadable(path: &Path, reason: String) -> Error {
    Error::KeyUnreadable {
        path: path.into(),
        reason,
    }
}

/// What is wrong with a key file age refused, in a line that says what to do. age's message
/// names the line; the usual mistakes (spaces, a public key, a plugin) are named too.
fn why_refused(text: &[u8], age_says: &str) -> String {
    let line_no = age_says
        .rsplit("line ")
        .next()
        .and_then(|n| n.trim().parse::<usize>().ok())
        .filter(|n| *n > 0);
    let Some(n) = line_no else {
        return format!("is refused by age ({age_says})");
    };
    let line = text.lines().nth(n - 1).and_then(|l| l.ok());
    let line = Zeroizing::new(line.unwrap_or_default());
    let hint = if line.trim_start().starts_with('#') {
        "a comment must start with `#` in the first column"
    } else if line.starts_with("AGE-PLUGIN-") {
        "age plugin identities are not supported: use an X25519 key from age-keygen"
    } else if line.starts_with("age1") {
        "that is a public key (a recipient), not an identity: pass the secret key file"
    } else if line.trim() != line.as_str() {
        "spaces before or after the key: remove them"
    } else {
        "not an age X25519 identity"
    };
    format!("is refused by age on line {n} ({hint})")
}

/// Group- or world-readable key files: world-readable is said each time the key is read;
/// readable through its group only (Kubernetes' `fsGroup`, a shared service group) once per
/// process, at info level after the first warning.
fn warn_if_shared(path: &Path, mode: u32) {
    static GROUP_SAID: std::sync::Once = std::sync::Once::new();
    if mode & 0o007 != 0 {
        tracing::warn!(
            path = %path.display(),
            mode = format_args!("{:04o}", mode & 0o7777),
            "age key file is readable by every user of this machine: restrict it with `chmod 600` (or 640 for a group)"
        );
    } else if mode & 0o070 != 0 {
        GROUP_SAID.call_once(|| {
            tracing::warn!(
                path = %path.display(),
                mode = format_args!("{:04o}", mode & 0o7777),
                "age key file is readable by its group: fine for a dedicated group (Kubernetes fsGroup), otherwise `chmod 600`"
            );
        });
    }
}

/// Writes a new X25519 identity to `path` with mode 0600, in `age-keygen`'s format. Never
/// overwrites: an existing file is an error. Returns the public recipient.
pub fn generate(path: &Path) -> Result<x25519::Recipient> {
    let identity = x25519::Identity::generate();
    let recipient = identity.to_public();
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| match e.kind() {
            ErrorKind::AlreadyExists => Error::KeyExists { path: path.into() },
            _ => Error::Usage(format!(
                "cannot create key file {}: {e}: choose a path in a writable directory",
                path.display()
            )),
        })?;
    use age::secrecy::ExposeSecret;
    let secret = identity.to_string();
    let text = Zeroizing::new(format!(
        "# created: {}\n# public key: {recipient}\n{}\n",
        crate::timestamps::now_rfc3339(),
        secret.expose_secret()
    ));
    file.write_all(text.as_bytes())
        .and_then(|_| file.sync_all())
        .map_err(|e| Error::io("cannot write key file", path, e))?;
    Ok(recipient)
}

/// An ASCII-armored age file (`age -a`, pasted into a TEXT column) as its binary form; anything
/// else as it is.
pub(crate) fn dearmored(content: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    if !content
        .trim_ascii_start()
        .starts_with(b"-----BEGIN AGE ENCRYPTED FILE-----")
    {
        return std::borrow::Cow::Borrowed(content);
    }
    let mut binary = Vec::with_capacity(content.len());
    let mut reader = age::armor::ArmoredReader::new(content.trim_ascii_start());
    match reader.read_to_end(&mut binary) {
        Ok(_) => std::borrow::Cow::Owned(binary),
        Err(_) => std::borrow::Cow::Borrowed(content),
    }
}

/// Which identity, if any, opens an age file's header (the payload is not read).
pub(crate) enum Opened {
    /// Opened by the identity with this recipient.
    By(String),
    NotByThisKey,
    NotAge,
}

pub(crate) fn opened_by(content: &[u8], keys: &KeyRing) -> Opened {
    let content = dearmored(content);
    for identity in keys.each() {
        let Ok(decryptor) = age::Decryptor::new_buffered(&content[..]) else {
            return Opened::NotAge;
        };
        if decryptor
            .decrypt(std::iter::once(identity as &dyn age::Identity))
            .is_ok()
        {
            return Opened::By(identity.to_public().to_string());
        }
    }
    Opened::NotByThisKey
}

/// Who a save encrypts new generations to. Always the key file's first identity (so that what
/// is written can be read back with the same key file, as restinpieces does), plus these.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recipients {
    /// More X25519 recipients (`age1...`): e.g. a recovery key kept offline, or a second host.
    pub extra: Vec<String>,
    /// Also every other identity of the key file (a key file holding old and new keys during
    /// a rotation, readable by the machines that hold either).
    pub all_identities: bool,
}

impl Recipients {
    /// Checks one `age1...` recipient; the error says what an age recipient looks like.
    pub fn check(text: &str) -> std::result::Result<String, String> {
        let text = text.trim();
        if text.starts_with("AGE-SECRET-KEY-") {
            return Err(
                "that is a secret key: pass its public key (`age-keygen -y KEYFILE` prints it)"
                    .into(),
            );
        }
        x25519::Recipient::from_str(text)
            .map(|r| r.to_string())
            .map_err(|e| format!("not an age X25519 recipient ({e}): it looks like age1... (`age-keygen -y KEYFILE` prints it)"))
    }

    /// Each recipient a generation is encrypted to with the key ring `keys`: the first
    /// identity's, then the other identities' (when asked), then the extra ones; each once.
    pub fn for_keys(&self, keys: &KeyRing) -> Result<Vec<x25519::Recipient>> {
        let mut out: Vec<x25519::Recipient> = vec![keys.recipient()];
        if self.all_identities {
            out.extend(keys.each()[1..].iter().map(|i| i.to_public()));
        }
        for text in &self.extra {
            out.push(
                x25519::Recipient::from_str(text)
                    .map_err(|e| Error::Usage(format!("--recipient {text}: {e}")))?,
            );
        }
        let mut seen = std::collections::HashSet::new();
        out.retain(|r| seen.insert(r.to_string()));
        Ok(out)
    }
}

/// Binary (not armored) age ciphertext of `plaintext` to `recipients` of the key ring `keys`.
pub(crate) fn encrypt(
    keys: &KeyRing,
    recipients: &Recipients,
    plaintext: &[u8],
) -> Result<Vec<u8>> {
    let recipients = recipients.for_keys(keys)?;
    let encryptor =
        age::Encryptor::with_recipients(recipients.iter().map(|r| r as &dyn age::Recipient))
            .map_err(|e| Error::Usage(format!("cannot encrypt: {e}")))?;
    let mut out = Vec::with_capacity(plaintext.len() + 256);
    let mut writer = encryptor
        .wrap_output(&mut out)
        .map_err(|e| Error::io("cannot encrypt", "<memory>", e))?;
    writer
        .write_all(plaintext)
        .and_then(|_| writer.finish().map(|_| ()))
        .map_err(|e| Error::io("cannot encrypt", "<memory>", e))?;
    Ok(out)
}

/// Why an age file could not be decrypted.
pub(crate) enum DecryptFailure {
    /// No identity of the key ring is a recipient.
    NoMatchingKey,
    /// Not an age file, or altered: the reason, in a line.
    Unreadable(String),
}

/// Decrypts `content` (binary or ASCII-armored age) with any identity of `keys`, into a
/// zeroizing buffer.
pub(crate) fn decrypt(
    keys: &KeyRing,
    content: &[u8],
) -> std::result::Result<Zeroizing<Vec<u8>>, DecryptFailure> {
    use std::io::Read;
    let content = dearmored(content);
    let decryptor = age::Decryptor::new_buffered(&content[..]).map_err(|_| {
        DecryptFailure::Unreadable("not an age file: its header is unreadable".into())
    })?;
    let mut reader = decryptor.decrypt(keys.identities()).map_err(|e| match e {
        age::DecryptError::NoMatchingKeys => DecryptFailure::NoMatchingKey,
        other => {
            DecryptFailure::Unreadable(other.to_string().lines().next().unwrap_or("").to_string())
        }
    })?;
    let mut plaintext = Zeroizing::new(Vec::new());
    reader
        .read_to_end(&mut plaintext)
        .map_err(|e| DecryptFailure::Unreadable(format!("decryption failed: {e}")))?;
    Ok(plaintext)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(n: usize) -> KeyRing {
        KeyRing::from_identities((0..n).map(|_| x25519::Identity::generate()).collect())
    }

    #[test]
    fn saves_go_to_the_first_identity_then_the_others_asked_for_each_once() {
        let keys = ring(2);
        let first = keys.recipient().to_string();
        let second = keys.each()[1].to_public().to_string();
        let other = x25519::Identity::generate().to_public().to_string();
        let names = |r: &Recipients| -> Vec<String> {
            r.for_keys(&keys)
                .unwrap()
                .iter()
                .map(|r| r.to_string())
                .collect()
        };
        assert_eq!(names(&Recipients::default()), vec![first.clone()]);
        let all = Recipients {
            extra: vec![other.clone(), first.clone(), other.clone()],
            all_identities: true,
        };
        assert_eq!(names(&all), [first, second, other]);
    }

    #[test]
    fn a_recipient_must_be_a_public_key() {
        let identity = x25519::Identity::generate();
        let public = identity.to_public().to_string();
        assert_eq!(Recipients::check(&format!(" {public}\n")), Ok(public));
        use age::secrecy::ExposeSecret;
        let secret = identity.to_string();
        assert!(Recipients::check(secret.expose_secret())
            .unwrap_err()
            .contains("secret key"));
        assert!(Recipients::check("age1xyz").is_err());
    }

    #[test]
    fn a_lower_case_key_is_refused_as_go_age_refuses_it() {
        use age::secrecy::ExposeSecret;
        let secret = x25519::Identity::generate().to_string();
        let upper = format!("{}\n", secret.expose_secret());
        let path = Path::new("k");
        assert!(KeyRing::parse(path, upper.as_bytes()).is_ok());
        let lower = upper.to_lowercase();
        let e = KeyRing::parse(path, lower.as_bytes())
            .unwrap_err()
            .to_string();
        assert!(e.contains("upper case") && e.contains("line 1"), "{e}");
        assert!(!e.contains(&lower.trim()[20..]), "the key in the message");
    }
}
