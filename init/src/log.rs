//! Console output: one line per event, `chinit: ` first, written with one `write(2)` and never
//! panicking (std's `eprintln!` panics when stderr is gone).

use std::io::Write;

/// Writes one line to standard error (the console in a VM). Control characters in it (an ESC from
/// a command line value, a newline from a client's input) are written escaped, so a line can
/// neither drive the terminal nor pass for another line.
pub fn line(args: std::fmt::Arguments<'_>) {
    let text = format!("chinit: {}\n", printable(&format!("{args}")));
    let _ = std::io::stderr().write_all(text.as_bytes());
}

/// `text` with every control character escaped (`\x1b`, `\n`, ...).
pub fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\x{:02x}", u32::from(c))),
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Writes one line to the kernel log (`/dev/kmsg`), at level 2 (critical); used when the console may
/// be gone.
pub fn kmsg(args: std::fmt::Arguments<'_>) {
    if let Ok(mut f) = std::fs::OpenOptions::new().write(true).open("/dev/kmsg") {
        for l in format!("{args}").lines() {
            let _ = f.write_all(format!("<2>chinit: {}\n", printable(l)).as_bytes());
        }
    }
}

/// `say!("...")`: one console line.
#[macro_export]
macro_rules! say {
    ($($t:tt)*) => { $crate::log::line(format_args!($($t)*)) };
}

#[cfg(test)]
mod tests {
    #[test]
    fn control_characters_are_escaped() {
        let cases = [
            ("plain text, unchanged", "plain text, unchanged"),
            ("chinit.hostname=\u{1b}[2Jx", "chinit.hostname=\\x1b[2Jx"),
            ("a\nchinit: fake line", "a\\nchinit: fake line"),
            ("tab\there\r\u{7f}", "tab\\there\\r\\x7f"),
            ("caf\u{e9} \u{9b}", "caf\u{e9} \\x9b"),
        ];
        for (input, want) in cases {
            assert_eq!(super::printable(input), want, "{input:?}");
        }
    }
}
