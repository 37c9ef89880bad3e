//! Tenant-controlled text in warnings, errors and logs, bounded: a Pod's annotation or name can be
//! hundreds of KiB before the apiserver's validation (which runs after mutating admission) sees it,
//! and each create attempt would otherwise echo it into the answer and a log line. Any text shown
//! to people (a terminal, a log line) shows its control characters escaped ([`visible`]).

use std::borrow::Cow;
use std::fmt;

/// Characters of a tenant's value that an answer or log line repeats.
pub const ECHO_CHARS: usize = 64;

/// The apiserver keeps 4 KiB of warnings per answer and cuts each to 256 characters beyond that
/// (`k8s.io/apiserver/pkg/endpoints/filters/warning.go`); more would only cost us bytes.
const WARNING_BYTES: usize = 4096;
const WARNING_CHARS: usize = 256;

/// Shows at most [`ECHO_CHARS`] characters of a value, cut on a character boundary and marked
/// with `…` and the full length. `{}` shows the text with its control characters escaped
/// ([`visible`]), `{:?}` quoted and escaped.
#[derive(Clone, Copy)]
pub struct Echo<'a>(pub &'a str);

/// Where `text` must be cut to keep `chars` characters: `None` when it is not longer.
fn cut_at(text: &str, chars: usize) -> Option<usize> {
    text.char_indices().nth(chars).map(|(end, _)| end)
}

impl fmt::Display for Echo<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match cut_at(self.0, ECHO_CHARS) {
            None => f.write_str(&visible(self.0)),
            Some(end) => write!(f, "{}…({} bytes)", visible(&self.0[..end]), self.0.len()),
        }
    }
}

/// Whether a character is shown escaped to people: a control character (C0 with tab and newline,
/// DEL, C1), or a Unicode bidirectional control, which makes a terminal show text in another order
/// than it is (Trojan Source, CVE-2021-42574).
fn is_hidden(c: char) -> bool {
    c.is_control() || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// Text for a terminal or a text log: control characters written as Rust escapes them (`\u{1b}`),
/// so a value a tenant wrote (an annotation, an env value, a name) cannot move the cursor, colour or
/// erase a line, forge a line of its own, set the clipboard (OSC 52) or reorder what is shown.
/// JSON and YAML output need none of it: their serialisers escape control characters.
pub fn visible(text: &str) -> Cow<'_, str> {
    if !text.contains(is_hidden) {
        return Cow::Borrowed(text);
    }
    let mut shown = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if is_hidden(c) {
            shown.extend(c.escape_unicode());
        } else {
            shown.push(c);
        }
    }
    Cow::Owned(shown)
}

impl fmt::Debug for Echo<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match cut_at(self.0, ECHO_CHARS) {
            None => write!(f, "{:?}", self.0),
            Some(end) => write!(f, "{:?}…({} bytes)", &self.0[..end], self.0.len()),
        }
    }
}

/// A JSON error without the whole strings serde quotes in it (`invalid type: string "…",
/// expected …`): the message's first and last [`ECHO_CHARS`] characters, and its position, with
/// control characters escaped (serde quotes an unknown field or variant as it is).
pub fn json_error(err: &serde_json::Error) -> String {
    let text = visible(&err.to_string()).into_owned();
    let position = format!(" at line {} column {}", err.line(), err.column());
    let (message, position) = match text.strip_suffix(&position) {
        Some(message) if err.line() != 0 => (message, position.as_str()),
        _ => (text.as_str(), ""),
    };
    let chars = message.chars().count();
    match (
        cut_at(message, ECHO_CHARS),
        message.char_indices().nth(chars.saturating_sub(ECHO_CHARS)),
    ) {
        (Some(head), Some((tail, _))) if head < tail => {
            format!(
                "{}…({} bytes)…{}{position}",
                &message[..head],
                message.len(),
                &message[tail..]
            )
        }
        _ => text,
    }
}

/// Keeps the warnings of one answer within what the apiserver passes on: each cut to 256
/// characters, at most 4 KiB in all, and a last one saying how many were left out.
pub fn bound_warnings(warnings: &mut Vec<String>) {
    let mut total = 0;
    for (i, warning) in warnings.iter_mut().enumerate() {
        if let Some(end) = cut_at(warning, WARNING_CHARS) {
            warning.truncate(end);
            warning.push('…');
        }
        total += warning.len();
        if total > WARNING_BYTES - 64 {
            let left_out = warnings.len() - i;
            warnings.truncate(i);
            warnings.push(format!("{left_out} more warnings not shown"));
            return;
        }
    }
}

/// At most `per_second` lines of a kind per second: any tenant can make every create attempt
/// warn, and the log must not grow with the attack. The caller passes the clock's second.
pub struct LogRateLimit {
    per_second: u32,
    /// `(second, lines asked for in it)`.
    window: std::sync::Mutex<(u64, u32)>,
}

impl LogRateLimit {
    pub const fn new(per_second: u32) -> Self {
        LogRateLimit {
            per_second,
            window: std::sync::Mutex::new((0, 0)),
        }
    }

    /// Whether a line may be written now, and how many the last busy second left out (to be
    /// logged once, when a new second starts).
    pub fn allow(&self, second: u64) -> (bool, u32) {
        let mut window = self.window.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut left_out = 0;
        if window.0 != second {
            left_out = window.1.saturating_sub(self.per_second);
            *window = (second, 0);
        }
        window.1 = window.1.saturating_add(1);
        (window.1 <= self.per_second, left_out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echoes_are_cut_on_a_character_boundary_with_a_marker() {
        assert_eq!(format!("{}", Echo("short")), "short");
        assert_eq!(format!("{:?}", Echo("a\"b")), r#""a\"b""#);
        let exact = "é".repeat(ECHO_CHARS);
        assert_eq!(format!("{}", Echo(&exact)), exact, "64 characters are shown whole");
        let long = "é".repeat(256 * 1024);
        let shown = format!("{}", Echo(&long));
        assert_eq!(shown, format!("{}…({} bytes)", "é".repeat(ECHO_CHARS), long.len()));
        let quoted = format!("{:?}", Echo(&long));
        assert!(quoted.starts_with('"') && quoted.ends_with(&format!("\"…({} bytes)", long.len())));
        assert!(quoted.len() < 200, "{}", quoted.len());
    }

    #[test]
    fn control_and_bidi_characters_are_shown_escaped() {
        assert!(matches!(visible("plain é ✓"), Cow::Borrowed("plain é ✓")));
        let hostile = "a\x1b[2Kb\x07c\x1b]52;c;aGk=\x07d\u{202e}e\x7ff\u{9b}g\n\th\u{200f}\u{2066}";
        assert_eq!(
            visible(hostile),
            r"a\u{1b}[2Kb\u{7}c\u{1b}]52;c;aGk=\u{7}d\u{202e}e\u{7f}f\u{9b}g\u{a}\u{9}h\u{200f}\u{2066}"
        );
        assert_eq!(format!("{}", Echo(hostile)), visible(hostile));
        let long = format!("{}\x1b", "x".repeat(ECHO_CHARS - 1));
        assert_eq!(
            format!("{}", Echo(&format!("{long}tail"))),
            format!("{}\\u{{1b}}…(68 bytes)", "x".repeat(63))
        );
        let unknown = serde_json::from_str::<Cut>("{\"\\u001b[31m\": 1}").unwrap_err();
        assert!(
            json_error(&unknown).starts_with(r"unknown field `\u{1b}[31m`"),
            "{}",
            json_error(&unknown)
        );
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Cut {}

    #[test]
    fn json_errors_do_not_quote_whole_strings() {
        let long = "x".repeat(256 * 1024);
        let err =
            serde_json::from_str::<std::collections::BTreeMap<String, String>>(&format!("\"{long}\"")).unwrap_err();
        assert!(err.to_string().len() > long.len(), "serde quotes the whole string");
        let text = json_error(&err);
        assert!(text.len() < 200, "{text}");
        assert!(text.starts_with("invalid type: string \"xxx"), "{text}");
        assert!(text.contains("xxx\", expected a map"), "{text}");
        assert!(
            text.ends_with(&format!("at line 1 column {}", long.len() + 2)),
            "{text}"
        );
        let eof = serde_json::from_str::<Vec<u8>>("[1,").unwrap_err();
        assert_eq!(json_error(&eof), eof.to_string());
    }

    #[test]
    fn warnings_of_one_answer_stay_within_4_kib() {
        let mut few = vec!["a".to_owned(), "b".to_owned()];
        bound_warnings(&mut few);
        assert_eq!(few, ["a", "b"]);
        let mut many: Vec<String> = (0..100).map(|i| format!("{i} {}", "y".repeat(1000))).collect();
        bound_warnings(&mut many);
        assert!(many.iter().all(|warning| warning.chars().count() <= WARNING_CHARS + 1));
        assert!(many.iter().map(String::len).sum::<usize>() <= WARNING_BYTES, "{many:?}");
        let last = many.last().unwrap();
        assert_eq!(*last, format!("{} more warnings not shown", 100 - (many.len() - 1)));
        assert!(many[0].starts_with("0 yyy") && many[0].ends_with('…'));
    }

    #[test]
    fn log_lines_are_limited_per_second_and_the_rest_counted() {
        let limit = LogRateLimit::new(3);
        let second_1: Vec<(bool, u32)> = (0..5).map(|_| limit.allow(1)).collect();
        assert_eq!(second_1, [(true, 0), (true, 0), (true, 0), (false, 0), (false, 0)]);
        assert_eq!(limit.allow(2), (true, 2), "the next second reports the two left out");
        assert_eq!(limit.allow(2), (true, 0));
    }
}
