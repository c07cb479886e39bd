//! Durations as users write them (`250ms`, `2s`, `1m`, `1500us`) and as looptop prints them.

use std::time::Duration;

/// Why a duration did not parse; the message quotes the value.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("'{value}' is not a duration: {why} (write e.g. 250ms, 2s, 1m)")]
pub struct DurationError {
    value: String,
    why: &'static str,
}

/// Parses `<number><unit>` with unit `ns`, `us`, `ms`, `s`, `m` or `h`. A bare `0` is allowed.
pub fn parse_duration(s: &str) -> Result<Duration, DurationError> {
    let err = |why| DurationError { value: s.to_string(), why };
    let t = s.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    if num.is_empty() {
        return Err(err("it does not start with a number"));
    }
    let n: f64 = num.parse().map_err(|_| err("the number is malformed"))?;
    let scale = match unit {
        "ns" => 1e-9,
        "us" | "µs" => 1e-6,
        "ms" => 1e-3,
        "s" => 1.0,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        "" if n == 0.0 => 0.0,
        "" => return Err(err("the unit is missing")),
        _ => return Err(err("the unit is unknown (use us, ms, s, m or h)")),
    };
    let secs = n * scale;
    if !secs.is_finite() || secs > 1e9 {
        return Err(err("it is too large"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Formats milliseconds for people: `0.42 ms`, `61.0 ms`, `3.20 s`.
pub fn fmt_ms(ms: f64) -> String {
    if ms >= 10_000.0 {
        format!("{:.1} s", ms / 1000.0)
    } else if ms >= 1000.0 {
        format!("{:.2} s", ms / 1000.0)
    } else if ms >= 10.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{ms:.2} ms")
    }
}

/// A size as people read it: "812 bytes", "52.3 kB", "18.4 MB".
pub fn fmt_bytes(n: u64) -> String {
    match n {
        0..=9_999 => format!("{n} bytes"),
        10_000..=9_999_999 => format!("{:.1} kB", n as f64 / 1e3),
        _ => format!("{:.1} MB", n as f64 / 1e6),
    }
}

/// The plural ending of a count: "" for 1, "s" otherwise ("1 stall", "2 stalls").
pub fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2s").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("1m").unwrap(), Duration::from_secs(60));
        assert_eq!(parse_duration("1500us").unwrap(), Duration::from_micros(1500));
        assert_eq!(parse_duration("0.5s").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
    }

    #[test]
    fn rejects_with_the_value_quoted() {
        for bad in ["", "ms", "10", "10 parsecs", "1.2.3s", "-5ms"] {
            let e = parse_duration(bad).unwrap_err().to_string();
            assert!(e.contains(&format!("'{bad}'")), "{e}");
        }
    }

    #[test]
    fn formats() {
        assert_eq!(fmt_ms(0.4213), "0.42 ms");
        assert_eq!(fmt_ms(61.04), "61.0 ms");
        assert_eq!(fmt_ms(3200.0), "3.20 s");
    }
}

/// `text` with every control character (C0, DEL, C1: what makes a terminal move the cursor,
/// retitle the window or clear the screen) replaced by `�`. Names, paths, command lines and
/// source lines come from the target's user (perf maps, thread names, files) or from a
/// recording: none of their bytes may drive root's terminal.
pub fn printable(text: String) -> String {
    if text.chars().any(char::is_control) {
        text.chars().map(|c| if c.is_control() { '\u{FFFD}' } else { c }).collect()
    } else {
        text
    }
}

#[cfg(test)]
mod printable_tests {
    #[test]
    fn control_characters_never_reach_the_terminal() {
        assert_eq!(
            super::printable("validate\u{1b}]0;pwned\u{7}\u{1b}[2J".into()),
            "validate\u{FFFD}]0;pwned\u{FFFD}\u{FFFD}[2J"
        );
        assert_eq!(super::printable("\u{9b}31m".into()), "\u{FFFD}31m");
        assert_eq!(super::printable("server.js".into()), "server.js");
    }
}
