//! age key files: reading identities (`age-keygen` format), generating a new one, and the
//! permission check.
//!
//! The key file is read each time it is needed, never cached for the life of the process.

use std::fs;
use std::io::{ErrorKind, Read, Write};
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
    /// Reads every `AGE-SECRET-KEY-1...` line of `path`; `#` comments and blank lines are
    /// skipped. Warns (through `tracing`) when the file is readable by group or others.
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
        let text = std::str::from_utf8(&text).map_err(|_| Error::KeyInvalid {
            path: path.into(),
            reason: "is not text".into(),
        })?;
        let mut identities = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let identity = x25519::Identity::from_str(line).map_err(|_| Error::KeyInvalid {
                path: path.into(),
                reason: if line.starts_with("age1") {
                    format!(
                        "holds a public key (age1...) on line {}, not the secret key (not an age X25519 identity)",
                        n + 1
                    )
                } else {
                    format!(
                        "has an unreadable line {} (not an age X25519 identity)",
                        n + 1
                    )
                },
            })?;
            identities.push(identity);
        }
        if identities.is_empty() {
            return Err(Error::KeyInvalid {
                path: path.into(),
                reason: "holds no identity".into(),
            });
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

fn warn_if_shared(path: &Path, mode: u32) {
    if mode & 0o077 != 0 {
        tracing::warn!(
            path = %path.display(),
            mode = format_args!("{:04o}", mode & 0o7777),
            "age key file is readable by group or others: restrict it with `chmod 600`"
        );
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

/// Binary (not armored) age ciphertext of `plaintext` to the key ring's first recipient.
pub(crate) fn encrypt(keys: &KeyRing, plaintext: &[u8]) -> Result<Vec<u8>> {
    let recipient = keys.recipient();
    let encryptor =
        age::Encryptor::with_recipients(std::iter::once(&recipient as &dyn age::Recipient))
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
