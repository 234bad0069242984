//! What litestream reads: the user's own bytes, plus an appended `socket:` block when the config
//! has none, so the supervisor has a private control socket for readiness, status and the sync
//! before stopping. Never a re-serialisation (litestream parses YAML 1.1).

use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use crate::config::{yaml_quote, LitestreamConfig};

/// litestream's control socket path when `socket.path` is not set.
pub const LITESTREAM_DEFAULT_SOCKET: &str = "/var/run/litestream.sock";

/// The config as handed to litestream, and the control socket the supervisor will use.
pub struct Rendered {
    /// The bytes litestream reads.
    pub yaml: Zeroizing<String>,
    /// The control socket, when there is one (injected, or the user's own).
    pub socket: Option<PathBuf>,
    /// True when the socket block was added by the supervisor.
    pub injected: bool,
}

impl std::fmt::Debug for Rendered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rendered")
            .field(
                "yaml",
                &format_args!("<{} bytes redacted>", self.yaml.len()),
            )
            .field("socket", &self.socket)
            .field("injected", &self.injected)
            .finish()
    }
}

/// Renders `config`, injecting a control socket at `socket` when the user configured none.
pub fn render(config: &LitestreamConfig, socket: &Path) -> Rendered {
    let user = config.yaml();
    if let Some(section) = config.socket() {
        return Rendered {
            yaml: Zeroizing::new(user.to_owned()),
            socket: section.enabled.then(|| {
                section
                    .path
                    .clone()
                    .unwrap_or_else(|| LITESTREAM_DEFAULT_SOCKET.into())
            }),
            injected: false,
        };
    }
    if !is_block_mapping(user) {
        tracing::warn!("the config is not a block mapping: no control socket injected; readiness falls back to a start-up window and the sync before stopping is skipped");
        return Rendered {
            yaml: Zeroizing::new(user.to_owned()),
            socket: None,
            injected: false,
        };
    }
    let mut yaml = Zeroizing::new(String::with_capacity(user.len() + 160));
    yaml.push_str(user);
    if !user.ends_with('\n') && !user.is_empty() {
        yaml.push('\n');
    }
    yaml.push_str(
        "# added by rip-litestream: its private control socket\nsocket:\n  enabled: true\n  path: ",
    );
    yaml.push_str(&yaml_quote(&socket.to_string_lossy()));
    yaml.push_str("\n  permissions: 0600\n");
    Rendered {
        yaml,
        socket: Some(socket.to_path_buf()),
        injected: true,
    }
}

/// True when a key appended at column 0 continues the document's top-level mapping: a single
/// block mapping (not `{...}` flow style) whose keys start at column 0, with no document markers
/// after the start.
fn is_block_mapping(yaml: &str) -> bool {
    let mut content = yaml
        .lines()
        .filter(|l| !l.trim_start().is_empty() && !l.trim_start().starts_with('#'));
    let mut first = content.next().unwrap_or("");
    if first.trim_end() == "---" {
        first = content.next().unwrap_or("");
    }
    let at_column_0 = !first.starts_with([' ', '\t']);
    let flow = first.starts_with('{') || first.starts_with('[');
    let markers = content.any(|l| l.starts_with("---") || l.starts_with("..."));
    at_column_0 && !flow && !markers
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Strictness;

    fn config(yaml: &str) -> LitestreamConfig {
        LitestreamConfig::parse(yaml.as_bytes(), Strictness::Lenient).unwrap()
    }

    #[test]
    fn injects_a_socket_after_the_users_bytes() {
        let user = "dbs:\n  - path: /a.db\n    replica: {type: file, path: /b}";
        let r = render(&config(user), Path::new("/run/x/control.sock"));
        assert!(r.injected);
        assert!(r.yaml.starts_with(user));
        assert_eq!(r.socket.as_deref(), Some(Path::new("/run/x/control.sock")));
        let back = config(&r.yaml);
        assert!(back.socket().unwrap().enabled);
        assert_eq!(back.dbs(), config(user).dbs());
    }

    #[test]
    fn keeps_the_users_socket() {
        let user = "socket:\n  enabled: yes\n  path: /tmp/mine.sock\ndbs:\n  - path: /a.db\n    replica: {type: file, path: /b}\n";
        let r = render(&config(user), Path::new("/run/x/control.sock"));
        assert!(!r.injected);
        assert_eq!(&*r.yaml, user);
        assert_eq!(r.socket.as_deref(), Some(Path::new("/tmp/mine.sock")));
    }

    #[test]
    fn indented_root_gets_no_injection() {
        let user = "  dbs:\n    - path: /a.db\n      replica: {type: file, path: /b}\n";
        let r = render(&config(user), Path::new("/s"));
        assert!(!r.injected && r.socket.is_none());
    }

    #[test]
    fn flow_mapping_gets_no_injection() {
        let user = "{dbs: [{path: /a.db, replica: {type: file, path: /b}}]}\n";
        let r = render(&config(user), Path::new("/s"));
        assert!(!r.injected && r.socket.is_none());
    }
}
