//! The MQTT password: where it comes from (`mqtt.password_file`, the environment variable
//! [`PASSWORD_ENV`], `mqtt.password`), a type whose `Debug` never shows it, and the warning for
//! a config file that holds it and that anyone may read.
//!
//! Precedence, first found wins: `mqtt.password_file`, then `EDGECLIP_MQTT_PASSWORD`, then
//! `mqtt.password`. The file is the most deliberate choice (a file only the daemon's user reads,
//! or systemd's `LoadCredential=`), so it wins; the environment beats the inline password so a
//! packaged config's placeholder can be overridden without editing the file. `password` and
//! `password_file` together are refused: which one was meant would be a guess.

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};

/// The environment variable that holds the MQTT password when `mqtt.password_file` is not set.
pub const PASSWORD_ENV: &str = "EDGECLIP_MQTT_PASSWORD";

/// Where a [`Password`] came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PasswordOrigin {
    /// `mqtt.password`, in the config file itself.
    Inline,
    /// The environment variable [`PASSWORD_ENV`].
    Env,
    /// `mqtt.password_file` (resolved against the config file's folder).
    File(PathBuf),
}

/// A password: its text is only reachable through [`Password::expose`], and `Debug` prints
/// its origin, never the text (a derived `Debug` of the config would otherwise print it).
#[derive(Clone, PartialEq, Eq)]
pub struct Password {
    text: String,
    origin: PasswordOrigin,
}

impl Password {
    /// `text`, which came from `origin`.
    pub fn new(text: impl Into<String>, origin: PasswordOrigin) -> Password {
        Password {
            text: text.into(),
            origin,
        }
    }

    /// The password itself: hand it to the MQTT client, never to a log line.
    pub fn expose(&self) -> &str {
        &self.text
    }

    /// Where it came from.
    pub fn origin(&self) -> &PasswordOrigin {
        &self.origin
    }
}

/// An inline password (`mqtt.password`), as a table built in code has it.
impl From<&str> for Password {
    fn from(text: &str) -> Password {
        Password::new(text, PasswordOrigin::Inline)
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Password")
            .field("origin", &self.origin)
            .field("text", &"<redacted>")
            .finish()
    }
}

/// The password the `[mqtt]` table asks for, by the precedence of the module docs: `file`
/// (`mqtt.password_file`, already resolved), else `env` (the value of [`PASSWORD_ENV`]; empty
/// counts as unset), else `inline`. A problem comes back as `(key, message)`; the message names
/// the file, never the password.
pub(super) fn resolve(
    inline: Option<String>,
    file: Option<PathBuf>,
    env: Option<OsString>,
) -> Result<Option<Password>, (&'static str, String)> {
    if let Some(file) = file {
        if inline.is_some() {
            return Err((
                "password_file",
                "give either mqtt.password or mqtt.password_file, not both".to_owned(),
            ));
        }
        return read_file(&file).map(Some).map_err(|m| ("password_file", m));
    }
    if let Some(env) = env.filter(|v| !v.is_empty()) {
        return match env.into_string() {
            Ok(text) => Ok(Some(Password::new(text, PasswordOrigin::Env))),
            Err(_) => Err((
                "password",
                format!("the environment variable {PASSWORD_ENV} is not valid UTF-8"),
            )),
        };
    }
    Ok(inline.map(|text| Password::new(text, PasswordOrigin::Inline)))
}

/// The password in `file`: its text without the trailing line break(s).
fn read_file(file: &Path) -> Result<Password, String> {
    let bytes = std::fs::read(file)
        .map_err(|e| format!("{}: cannot read the password file: {e}", file.display()))?;
    let text = String::from_utf8(bytes)
        .map_err(|_| format!("{}: the password file is not valid UTF-8", file.display()))?;
    let text = text.trim_end_matches(['\n', '\r']);
    if text.is_empty() {
        return Err(format!("{}: the password file is empty", file.display()));
    }
    Ok(Password::new(text, PasswordOrigin::File(file.to_owned())))
}

/// The warning for `file`, which holds an inline password, when its permission bits `mode` let
/// anyone ("others") read it.
pub(super) fn world_readable_warning(file: &Path, mode: u32) -> Option<String> {
    (mode & 0o004 != 0).then(|| {
        format!(
            "{}: holds mqtt.password and anyone on this machine may read it (mode {:03o}); \
             run `chmod 640 {}` (and give the file to the daemon's group), or move the password \
             to mqtt.password_file",
            file.display(),
            mode & 0o777,
            file.display()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_text() {
        for origin in [
            PasswordOrigin::Inline,
            PasswordOrigin::Env,
            PasswordOrigin::File("/etc/edgeclip/mqtt-password".into()),
        ] {
            let p = Password::new("hunter2-s3cret", origin);
            let shown = format!("{p:?} {p:#?}");
            assert!(!shown.contains("hunter2"), "{shown}");
            assert!(shown.contains("<redacted>"), "{shown}");
            assert_eq!(p.expose(), "hunter2-s3cret");
        }
    }

    #[test]
    fn the_file_wins_then_the_environment_then_the_inline_password() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "from-file\r\n").unwrap();
        let p = resolve(None, Some(file.clone()), Some("from-env".into()))
            .unwrap()
            .unwrap();
        assert_eq!(p.expose(), "from-file");
        assert_eq!(p.origin(), &PasswordOrigin::File(file.clone()));
        let p = resolve(Some("inline".into()), None, Some("from-env".into()))
            .unwrap()
            .unwrap();
        assert_eq!((p.expose(), p.origin()), ("from-env", &PasswordOrigin::Env));
        // An empty variable counts as unset.
        let p = resolve(Some("inline".into()), None, Some("".into()))
            .unwrap()
            .unwrap();
        assert_eq!(
            (p.expose(), p.origin()),
            ("inline", &PasswordOrigin::Inline)
        );
        assert_eq!(resolve(None, None, None), Ok(None));
    }

    #[test]
    fn a_password_file_keeps_inner_spaces_and_drops_the_line_break() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, " a b \n").unwrap();
        let p = resolve(None, Some(file), None).unwrap().unwrap();
        assert_eq!(p.expose(), " a b ");
    }

    #[test]
    fn bad_password_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "\n").unwrap();
        let (key, msg) = resolve(None, Some(empty.clone()), None).unwrap_err();
        assert_eq!(key, "password_file");
        assert!(msg.contains(&*empty.to_string_lossy()), "{msg}");
        assert!(msg.contains("is empty"), "{msg}");
        let missing = dir.path().join("missing");
        let (key, msg) = resolve(None, Some(missing.clone()), None).unwrap_err();
        assert_eq!(key, "password_file");
        assert!(msg.contains(&*missing.to_string_lossy()), "{msg}");
        assert!(msg.contains("cannot read the password file"), "{msg}");
        let (key, msg) = resolve(Some("x".into()), Some(empty), None).unwrap_err();
        assert_eq!(key, "password_file");
        assert!(msg.contains("not both"), "{msg}");
    }

    #[test]
    fn only_a_file_others_may_read_is_warned_about() {
        let f = Path::new("/etc/edgeclip/edgeclip.toml");
        assert_eq!(world_readable_warning(f, 0o100640), None);
        assert_eq!(world_readable_warning(f, 0o600), None);
        let w = world_readable_warning(f, 0o100644).unwrap();
        assert!(w.starts_with("/etc/edgeclip/edgeclip.toml: "), "{w}");
        assert!(w.contains("mode 644"), "{w}");
        assert!(w.contains("chmod 640 /etc/edgeclip/edgeclip.toml"), "{w}");
        assert!(w.contains("mqtt.password_file"), "{w}");
    }
}
