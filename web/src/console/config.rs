//! The console's configuration: whether it is served and the passwords guarding it, plus the
//! session table that every copy of the state must share.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use super::auth::SessionStore;
use super::throttle::LoginThrottle;

/// Whether the console is served, and who may use it.
///
/// With no password, anyone who reaches the server is an admin, which is only safe on loopback:
/// [`ConsoleConfig::check_listen`] refuses any other address. The passwords are never logged,
/// and `Debug` prints only whether each is set.
#[derive(Clone)]
pub struct ConsoleConfig {
    /// Whether the console's routes exist at all.
    pub enabled: bool,
    /// The password of the admin role, which may trigger, cancel, clear, mark and pause.
    pub admin_password: Option<String>,
    /// The password of the read-only role, which sees everything and changes nothing.
    pub readonly_password: Option<String>,
    /// Lives here rather than in the router so that every `app()` built from the same state
    /// shares one session table.
    pub(crate) sessions: Arc<SessionStore>,
    /// Wrong passwords so far, shared the same way.
    pub(crate) throttle: Arc<LoginThrottle>,
}

impl ConsoleConfig {
    /// A served console; an empty password counts as none (an unset environment variable often
    /// arrives as an empty string).
    pub fn new(admin_password: Option<String>, readonly_password: Option<String>) -> ConsoleConfig {
        ConsoleConfig {
            enabled: true,
            admin_password: admin_password.filter(|password| !password.is_empty()),
            readonly_password: readonly_password.filter(|password| !password.is_empty()),
            sessions: Arc::new(SessionStore::default()),
            throttle: Arc::new(LoginThrottle::default()),
        }
    }

    /// No console: the server answers only the APIs.
    pub fn disabled() -> ConsoleConfig {
        ConsoleConfig {
            enabled: false,
            ..ConsoleConfig::new(None, None)
        }
    }

    /// Whether viewers must log in.
    pub fn login_required(&self) -> bool {
        self.admin_password.is_some() || self.readonly_password.is_some()
    }

    /// Refuses to serve an open console (no password) beyond loopback, where anyone reaching
    /// the port could trigger and cancel runs.
    pub fn check_listen(&self, address: SocketAddr) -> Result<(), ConsoleConfigError> {
        if self.enabled && !self.login_required() && !address.ip().is_loopback() {
            return Err(ConsoleConfigError::OpenBeyondLoopback(address));
        }
        Ok(())
    }
}

impl Default for ConsoleConfig {
    /// A served console without passwords, for loopback.
    fn default() -> ConsoleConfig {
        ConsoleConfig::new(None, None)
    }
}

impl fmt::Debug for ConsoleConfig {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("ConsoleConfig")
            .field("enabled", &self.enabled)
            .field("admin_password_set", &self.admin_password.is_some())
            .field("readonly_password_set", &self.readonly_password.is_some())
            .finish_non_exhaustive()
    }
}

/// A console configuration that must not be served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConsoleConfigError {
    /// The console has no password and the address is reachable from other machines.
    #[error(
        "refusing to serve the console without a password on {0}, which is reachable beyond loopback"
    )]
    OpenBeyondLoopback(SocketAddr),
}

#[cfg(test)]
mod tests {
    use super::ConsoleConfig;

    #[test]
    fn debug_never_shows_passwords() {
        let config = ConsoleConfig::new(Some("hunter2".to_owned()), Some("peek".to_owned()));
        let printed = format!("{config:?}");
        assert!(
            !printed.contains("hunter2") && !printed.contains("peek"),
            "{printed}"
        );
        assert!(printed.contains("admin_password_set: true"), "{printed}");
    }

    #[test]
    fn an_open_console_stays_on_loopback() {
        let open = ConsoleConfig::default();
        assert!(open.check_listen("127.0.0.1:8080".parse().unwrap()).is_ok());
        assert!(open.check_listen("[::1]:8080".parse().unwrap()).is_ok());
        assert!(open.check_listen("0.0.0.0:8080".parse().unwrap()).is_err());
        let empty = ConsoleConfig::new(Some(String::new()), None);
        assert!(empty.check_listen("0.0.0.0:8080".parse().unwrap()).is_err());
        let guarded = ConsoleConfig::new(Some("secret".to_owned()), None);
        assert!(
            guarded
                .check_listen("0.0.0.0:8080".parse().unwrap())
                .is_ok()
        );
        let readonly_only = ConsoleConfig::new(None, Some("peek".to_owned()));
        assert!(
            readonly_only
                .check_listen("0.0.0.0:8080".parse().unwrap())
                .is_ok()
        );
        assert!(
            ConsoleConfig::disabled()
                .check_listen("0.0.0.0:8080".parse().unwrap())
                .is_ok()
        );
    }
}
