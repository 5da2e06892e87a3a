//! Why a connection attempt failed, in words an operator can act on, and how often to say it.
//!
//! rumqttc reports a refused CONNECT as a return code and a failed TLS handshake as a rustls
//! error wrapped in an I/O error: [`describe`] turns both into one sentence that says what was
//! refused (the credentials, the broker's certificate, our client certificate) and which key
//! to look at. [`Reporter`] decides which failures to log: the first of a kind at once, the
//! same one again at most once a [`REMIND_EVERY`] with the number of attempts since, so a
//! broker that refuses the password does not fill the log at every retry. Both are pure: the
//! time comes in as a value.

use std::io::ErrorKind;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use rumqttc::tokio_rustls::rustls::{self, AlertDescription, CertificateError};
use rumqttc::{ConnectReturnCode, ConnectionError, TlsError};

use crate::config::MqttConfig;

/// How often a failure that keeps repeating is logged again.
pub(super) const REMIND_EVERY: Duration = Duration::from_secs(60);

/// What the words of a failure depend on: how the sink connects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Context {
    /// `mqtt.host`.
    pub(super) host: String,
    /// `mqtt.port`.
    pub(super) port: u16,
    /// `mqtt.tls`.
    pub(super) tls: bool,
    /// `mqtt.tls_ca`; `None`: the system's CA certificates.
    pub(super) ca: Option<PathBuf>,
    /// `mqtt.tls_cert` is set.
    pub(super) client_cert: bool,
    /// `mqtt.username`.
    pub(super) username: Option<String>,
}

impl Context {
    pub(super) fn of(cfg: &MqttConfig) -> Context {
        Context {
            host: cfg.host.clone(),
            port: cfg.port,
            tls: cfg.tls,
            ca: cfg.tls_ca.clone(),
            client_cert: cfg.tls_cert.is_some(),
            username: cfg.username.clone(),
        }
    }

    fn trusted(&self) -> String {
        match &self.ca {
            Some(ca) => format!("the CA in mqtt.tls_ca ({})", ca.display()),
            None => "the system's CA certificates".to_owned(),
        }
    }
}

/// How bad a failure is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Severity {
    /// The broker or the network is away: it may come back by itself (WARN).
    Transient,
    /// The broker refused us (credentials, certificates): an operator must act (ERROR).
    Refused,
}

/// A failed attempt, described.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Failure {
    pub(super) severity: Severity,
    /// One sentence, without the broker's name: `the broker refused the credentials (...)`.
    pub(super) words: String,
}

fn refused(words: String) -> Failure {
    Failure {
        severity: Severity::Refused,
        words,
    }
}

/// The rustls error inside `e`, if the failure came from TLS.
fn rustls_error(e: &ConnectionError) -> Option<&rustls::Error> {
    let io = match e {
        ConnectionError::Io(io) => io,
        ConnectionError::Tls(TlsError::Io(io)) => io,
        ConnectionError::Tls(TlsError::TLS(tls)) => return Some(tls),
        _ => return None,
    };
    io.get_ref()?.downcast_ref::<rustls::Error>()
}

/// `e`, the failure of a connection attempt, in words.
pub(super) fn describe(e: &ConnectionError, cx: &Context) -> Failure {
    let user = match &cx.username {
        Some(u) => format!(" of user {u:?}"),
        None => String::new(),
    };
    if let ConnectionError::ConnectionRefused(code) = e {
        return refused(match code {
            ConnectReturnCode::BadUserNamePassword => format!(
                "the broker refused the credentials{user} (bad user name or password); check \
                 mqtt.username and the password"
            ),
            ConnectReturnCode::NotAuthorized if cx.username.is_some() => format!(
                "the broker refused the credentials{user} (not authorized: wrong password, or \
                 the user may not connect); check mqtt.username and the password"
            ),
            ConnectReturnCode::NotAuthorized => "the broker refused the connection (not \
                 authorized): it wants credentials; set mqtt.username and mqtt.password_file"
                .to_owned(),
            ConnectReturnCode::BadClientId => {
                "the broker refused the client id; set another mqtt.client_id".to_owned()
            }
            ConnectReturnCode::RefusedProtocolVersion => {
                "the broker refused MQTT 3.1.1 (protocol version)".to_owned()
            }
            ConnectReturnCode::ServiceUnavailable | ConnectReturnCode::Success => {
                return Failure {
                    severity: Severity::Transient,
                    words: format!("the broker refused the connection ({code:?})"),
                };
            }
        });
    }
    if let Some(tls) = rustls_error(e) {
        return describe_tls(tls, cx);
    }
    if let ConnectionError::Tls(t) = e {
        return refused(format!("the TLS connection failed: {t}"));
    }
    // Over TLS 1.3 a broker checks our certificate after the handshake, as we send CONNECT: its
    // alert or its reset, whichever reaches us first, is what a refused certificate looks like.
    if let ConnectionError::Io(io) = e
        && cx.tls
        && matches!(
            io.kind(),
            ErrorKind::ConnectionReset | ErrorKind::UnexpectedEof | ErrorKind::BrokenPipe
        )
    {
        return refused(format!(
            "the broker closed the TLS connection before its CONNACK ({e}); {}",
            if cx.client_cert {
                "did it refuse the client certificate in mqtt.tls_cert?"
            } else {
                "if it wants a client certificate, set mqtt.tls_cert and mqtt.tls_key"
            }
        ));
    }
    Failure {
        severity: Severity::Transient,
        words: format!("cannot connect ({e})"),
    }
}

fn describe_tls(e: &rustls::Error, cx: &Context) -> Failure {
    let words = match e {
        rustls::Error::InvalidCertificate(c) => match c {
            CertificateError::UnknownIssuer => format!(
                "the broker's certificate is not signed by {} (unknown issuer)",
                cx.trusted()
            ),
            CertificateError::NotValidForName => format!(
                "the broker's certificate is not valid for the name {:?} (mqtt.host must be \
                 one of its subject alternative names)",
                cx.host
            ),
            CertificateError::Expired => "the broker's certificate has expired".to_owned(),
            CertificateError::NotValidYet => {
                "the broker's certificate is not valid yet (is this machine's clock right?)"
                    .to_owned()
            }
            other => format!("the broker's certificate was rejected ({other:?})"),
        },
        rustls::Error::AlertReceived(alert) => {
            let asked = matches!(
                alert,
                AlertDescription::CertificateRequired | AlertDescription::HandshakeFailure
            );
            match (cx.client_cert, asked) {
                (false, true) => format!(
                    "the broker wants a client certificate (TLS alert {alert:?}); set \
                     mqtt.tls_cert and mqtt.tls_key"
                ),
                (true, _) => format!(
                    "the broker refused the client certificate in mqtt.tls_cert (TLS alert \
                     {alert:?}): is it signed by a CA the broker trusts?"
                ),
                (false, false) => format!("the broker ended the TLS handshake (alert {alert:?})"),
            }
        }
        rustls::Error::InvalidMessage(_) => format!(
            "the TLS handshake failed ({e}): is port {} a TLS port?",
            cx.port
        ),
        other => format!("the TLS handshake failed ({other})"),
    };
    refused(words)
}

/// What [`Reporter::failed`] says to log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Report {
    /// A new failure (or the first since the last connection): log it.
    First,
    /// The same failure again, `attempts` times since it was last logged: log a reminder.
    Reminder {
        /// Failed attempts since the last line about it.
        attempts: u32,
    },
}

/// Which failures to log: each new one at once, then, while attempts keep failing, a reminder
/// once a [`REMIND_EVERY`]. "New" means not yet logged since the last connection: a broker that
/// refuses a missing client certificate is seen sometimes as a TLS alert, sometimes as a reset
/// connection (whichever reaches us first), and the two must not take turns in the log.
#[derive(Debug, Default)]
pub(super) struct Reporter {
    /// The words logged since the last connection (the latest few).
    seen: Vec<String>,
    /// When the last line was logged.
    last_line: Option<Instant>,
    /// Attempts that failed, without a line, since then.
    repeats: u32,
}

/// How many different failures [`Reporter`] remembers.
const SEEN: usize = 8;

impl Reporter {
    /// An attempt failed with `words` at `now`: what to log, if anything.
    pub(super) fn failed(&mut self, words: &str, now: Instant) -> Option<Report> {
        if !self.seen.iter().any(|w| w == words) {
            if self.seen.len() == SEEN {
                self.seen.remove(0);
            }
            self.seen.push(words.to_owned());
            self.last_line = Some(now);
            self.repeats = 0;
            return Some(Report::First);
        }
        self.repeats += 1;
        if let Some(at) = self.last_line
            && now.saturating_duration_since(at) < REMIND_EVERY
        {
            return None;
        }
        self.last_line = Some(now);
        let attempts = std::mem::take(&mut self.repeats);
        Some(Report::Reminder { attempts })
    }

    /// The connection is up: the next failure is news again.
    pub(super) fn connected(&mut self) {
        *self = Reporter::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cx() -> Context {
        Context {
            host: "127.0.0.1".into(),
            port: 8883,
            tls: true,
            ca: Some("/etc/edgeclip/ca.pem".into()),
            client_cert: false,
            username: Some("edgeclip".into()),
        }
    }

    fn tls_io(e: rustls::Error) -> ConnectionError {
        ConnectionError::Tls(TlsError::Io(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            e,
        )))
    }

    #[test]
    fn refused_credentials_are_named() {
        let f = describe(
            &ConnectionError::ConnectionRefused(ConnectReturnCode::BadUserNamePassword),
            &cx(),
        );
        assert_eq!(f.severity, Severity::Refused);
        assert!(
            f.words.starts_with(
                "the broker refused the credentials of user \"edgeclip\" (bad user name or \
                 password)"
            ),
            "{}",
            f.words
        );
        let f = describe(
            &ConnectionError::ConnectionRefused(ConnectReturnCode::NotAuthorized),
            &cx(),
        );
        assert!(f.words.contains("refused the credentials"), "{}", f.words);
        let mut anonymous = cx();
        anonymous.username = None;
        let f = describe(
            &ConnectionError::ConnectionRefused(ConnectReturnCode::NotAuthorized),
            &anonymous,
        );
        assert!(f.words.contains("set mqtt.username"), "{}", f.words);
    }

    #[test]
    fn certificate_failures_say_which_side_and_which_key() {
        let f = describe(
            &tls_io(rustls::Error::InvalidCertificate(
                CertificateError::UnknownIssuer,
            )),
            &cx(),
        );
        assert_eq!(f.severity, Severity::Refused);
        assert_eq!(
            f.words,
            "the broker's certificate is not signed by the CA in mqtt.tls_ca \
             (/etc/edgeclip/ca.pem) (unknown issuer)"
        );
        let mut system = cx();
        system.ca = None;
        let f = describe(
            &ConnectionError::Io(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer),
            )),
            &system,
        );
        assert!(
            f.words.contains("the system's CA certificates"),
            "{}",
            f.words
        );
        let f = describe(
            &tls_io(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName,
            )),
            &cx(),
        );
        assert!(f.words.contains("\"127.0.0.1\""), "{}", f.words);
        let alert = ConnectionError::Io(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::AlertReceived(AlertDescription::CertificateRequired),
        ));
        let f = describe(&alert, &cx());
        assert!(
            f.words.starts_with("the broker wants a client certificate"),
            "{}",
            f.words
        );
        let mut with_cert = cx();
        with_cert.client_cert = true;
        let f = describe(&alert, &with_cert);
        assert!(
            f.words
                .starts_with("the broker refused the client certificate in mqtt.tls_cert"),
            "{}",
            f.words
        );
    }

    #[test]
    fn network_failures_are_transient() {
        let e = ConnectionError::Io(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "Connection refused",
        ));
        let f = describe(&e, &cx());
        assert_eq!(f.severity, Severity::Transient);
        assert_eq!(f.words, "cannot connect (I/O: Connection refused)");
        // A reset before the CONNACK: over TLS, likely our certificate; over TCP, the network.
        let reset = || {
            ConnectionError::Io(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "Connection reset by peer",
            ))
        };
        let f = describe(&reset(), &cx());
        assert_eq!(f.severity, Severity::Refused);
        assert!(f.words.contains("set mqtt.tls_cert"), "{}", f.words);
        let mut plain = cx();
        plain.tls = false;
        assert_eq!(describe(&reset(), &plain).severity, Severity::Transient);
    }

    #[test]
    fn a_repeated_failure_is_reminded_once_a_minute_with_its_count() {
        let t0 = Instant::now();
        let s = |secs: u64| t0 + Duration::from_secs(secs);
        let mut r = Reporter::default();
        assert_eq!(r.failed("refused", t0), Some(Report::First));
        for i in 1..=5 {
            assert_eq!(
                r.failed("refused", s(i * 10)),
                None,
                "attempt at {}s",
                i * 10
            );
        }
        assert_eq!(
            r.failed("refused", s(60)),
            Some(Report::Reminder { attempts: 6 })
        );
        assert_eq!(r.failed("refused", s(70)), None);
        // Another reason is news at once; the two taking turns afterwards are not.
        assert_eq!(r.failed("cannot connect", s(71)), Some(Report::First));
        for i in 0..20 {
            let words = if i % 2 == 0 {
                "refused"
            } else {
                "cannot connect"
            };
            assert_eq!(r.failed(words, s(72 + i)), None, "attempt {i}");
        }
        assert_eq!(
            r.failed("refused", s(131)),
            Some(Report::Reminder { attempts: 21 })
        );
        // After a connection, the same failure is news again.
        r.connected();
        assert_eq!(r.failed("refused", s(132)), Some(Report::First));
    }
}
