//! Keeping a service's own credentials out of what mih stores and shows: a target that echoes
//! the token it was sent (a debugging endpoint, an error page quoting the request, a broker
//! error quoting its URI) would otherwise put it into the delivery log, which viewers read.
//!
//! Each of the service's secrets is looked for as sent (and as it appears inside a Basic
//! `Authorization` header or a URI) in the response body, headers and error text of every
//! attempt, and replaced by [`REDACTED`] before anything leaves the transport.

use aho_corasick::{AhoCorasick, MatchKind};
use base64::Engine as _;
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};

use crate::transport::Attempt;

/// What a secret is replaced by.
pub(crate) const REDACTED: &str = "[redacted]";

/// Secrets shorter than this are not looked for: replacing every occurrence of two or three
/// characters would garble the text beyond use, and such a secret protects nothing anyway.
pub(crate) const MIN_SECRET_LEN: usize = 4;

#[derive(Debug, Default, Clone)]
pub(crate) struct Redactor {
    /// `None` when the service has no secret long enough to look for.
    finder: Option<AhoCorasick>,
    patterns: Vec<String>,
}

impl Redactor {
    /// Looks for each secret and the forms it takes on the wire. `basic` is a Basic auth
    /// username and password, whose pair travels base64-encoded.
    pub(crate) fn new<'a>(
        secrets: impl IntoIterator<Item = &'a str>,
        basic: Option<(&str, &str)>,
    ) -> Self {
        let mut patterns: Vec<String> = Vec::new();
        for secret in secrets {
            if secret.len() < MIN_SECRET_LEN {
                continue;
            }
            patterns.push(secret.to_owned());
            let encoded = utf8_percent_encode(secret, NON_ALPHANUMERIC).to_string();
            if encoded != secret {
                patterns.push(encoded);
            }
        }
        if let Some((username, password)) = basic
            && password.len() >= MIN_SECRET_LEN
        {
            patterns.push(
                base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}")),
            );
        }
        patterns.sort();
        patterns.dedup();
        if patterns.is_empty() {
            return Redactor::default();
        }
        // Leftmost-longest: a secret that contains another is replaced whole.
        let finder = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .build(&patterns)
            .ok();
        Redactor { finder, patterns }
    }

    /// `text` with every secret replaced.
    pub(crate) fn text(&self, text: &str) -> String {
        match &self.finder {
            Some(finder) if finder.is_match(text) => {
                finder.replace_all(text, &vec![REDACTED; finder.patterns_len()])
            }
            _ => text.to_owned(),
        }
    }

    /// A body cut at its limit may end with the start of a secret the cut went through;
    /// that start is cut off too.
    fn cut_partial_secret(&self, text: &mut String) {
        let longest = self
            .patterns
            .iter()
            .filter_map(|secret| {
                (2..secret.len())
                    .rev()
                    .filter(|&n| secret.is_char_boundary(n))
                    .find(|&n| text.ends_with(&secret[..n]))
            })
            .max();
        if let Some(n) = longest {
            text.truncate(text.len() - n);
        }
    }

    fn in_place(&self, text: &mut String) {
        if let Some(finder) = &self.finder
            && finder.is_match(text.as_str())
        {
            *text = self.text(text);
        }
    }

    /// The attempt with every secret removed from its body, headers and error.
    pub(crate) fn attempt(&self, mut attempt: Attempt) -> Attempt {
        if self.finder.is_none() {
            return attempt;
        }
        if let Some(body) = &mut attempt.body {
            self.in_place(body);
            if attempt.body_truncated {
                self.cut_partial_secret(body);
            }
        }
        if let Some(error) = &mut attempt.error {
            self.in_place(error);
        }
        for header in &mut attempt.headers {
            self.in_place(&mut header.value);
        }
        attempt
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_and_their_wire_forms_are_replaced() {
        let redactor = Redactor::new(["s3cr3t-token", "p@ss word"], Some(("moodle", "p@ss word")));
        let basic = base64::engine::general_purpose::STANDARD.encode("moodle:p@ss word");
        let text = format!(
            "echo: Bearer s3cr3t-token; uri amqp://u:p%40ss%20word@h; auth Basic {basic}; p@ss word"
        );
        assert_eq!(
            redactor.text(&text),
            "echo: Bearer [redacted]; uri amqp://u:[redacted]@h; auth Basic [redacted]; [redacted]"
        );
    }

    #[test]
    fn short_secrets_and_clean_text_are_left_alone() {
        let redactor = Redactor::new(["abc"], None);
        assert_eq!(redactor.text("abc abc"), "abc abc");
        let none = Redactor::new(std::iter::empty(), None);
        assert_eq!(none.text("anything"), "anything");
    }

    #[test]
    fn a_body_cut_through_a_secret_loses_the_secret_s_start() {
        let redactor = Redactor::new(["s3cr3t-token"], None);
        let cut = Attempt {
            verdict: crate::transport::Verdict::Delivered,
            status: Some(200),
            headers: Vec::new(),
            body: Some("token=s3cr3t-to".into()),
            body_truncated: true,
            error: None,
        };
        assert_eq!(redactor.attempt(cut).body.as_deref(), Some("token="));
    }

    #[test]
    fn the_longest_secret_wins() {
        let redactor = Redactor::new(["token", "token-with-suffix"], None);
        assert_eq!(redactor.text("x token-with-suffix y"), "x [redacted] y");
    }
}
