//! Keeps credentials out of error messages and logs: every message that came from a storage
//! backend passes through [`Secrets::scrub`] before it reaches a [`BlobError`](super::BlobError).

use std::error::Error;
use std::fmt;

/// What credentials are replaced with wherever they would be shown.
pub(crate) const REDACTED: &str = "***";

/// The credential values a store was built with, from its configuration or the environment.
#[derive(Default, Clone)]
pub(crate) struct Secrets {
    values: Vec<String>,
}

impl Secrets {
    /// Remembers the given values; empty ones are skipped, as they would match everywhere.
    pub(crate) fn new(values: impl IntoIterator<Item = String>) -> Self {
        let mut values: Vec<String> = values
            .into_iter()
            .filter(|value| !value.is_empty())
            .collect();
        // Longer first, so that a secret containing another is replaced whole.
        values.sort_by_key(|value| std::cmp::Reverse(value.len()));
        values.dedup();
        Secrets { values }
    }

    /// The text with every known credential replaced by `***`.
    pub(crate) fn scrub(&self, text: &str) -> String {
        self.values.iter().fold(text.to_owned(), |text, secret| {
            text.replace(secret.as_str(), REDACTED)
        })
    }

    /// The error and its chain of sources as one line, scrubbed. Sources whose text the message
    /// already contains are left out, since many errors print their source themselves.
    pub(crate) fn describe(&self, error: &(dyn Error + 'static)) -> String {
        let mut message = error.to_string();
        let mut source = error.source();
        while let Some(cause) = source {
            let text = cause.to_string();
            if !message.contains(&text) {
                message.push_str(": ");
                message.push_str(&text);
            }
            source = cause.source();
        }
        self.scrub(&message)
    }
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secrets({} redacted)", self.values.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrubs_every_secret_and_shows_none_in_debug() {
        let secrets = Secrets::new([
            "s3cr3t".to_owned(),
            String::new(),
            "s3cr3t-token".to_owned(),
        ]);
        assert_eq!(
            secrets.scrub("key s3cr3t, token s3cr3t-token"),
            "key ***, token ***"
        );
        assert_eq!(format!("{secrets:?}"), "Secrets(2 redacted)");
    }

    #[test]
    fn describe_follows_the_source_chain_once() {
        let inner = std::io::Error::other("connection refused by s3cr3t");
        let outer = std::io::Error::other(inner);
        let secrets = Secrets::new(["s3cr3t".to_owned()]);
        assert_eq!(secrets.describe(&outer), "connection refused by ***");
    }
}
