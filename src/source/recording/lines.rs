//! The lines of a recording, read as bytes with a bounded length: a line is never held past
//! [`MAX_LINE`] bytes, however long it is in the file, so memory follows what the file really
//! holds and not what a corrupt or hostile file claims.

use std::io::{self, BufRead, Read};

/// The longest line read (16 MiB); a longer one is skipped to its newline without being held.
///
/// The longest line looptop writes is the header, which carries the target's command line. The
/// kernel bounds a command line by `ARG_MAX` (a quarter of the stack limit: 2 MiB by default)
/// and JSON escapes only control characters, so a real header stays well under 16 MiB; frame
/// lines (a symbol and a source line cut to 160 characters) and stacks (at most a few hundred
/// frame ids) are kilobytes. 16 MiB leaves room for unusual stack limits and stays small next to
/// the memory of looptop itself.
pub const MAX_LINE: usize = 16 << 20;

/// One line of the file.
#[derive(Debug, PartialEq, Eq)]
pub enum Item<'a> {
    /// A line without its newline; `terminated` is false for a last line with no newline (a
    /// recorder killed while writing it).
    Line {
        /// Its bytes.
        text: &'a [u8],
        /// Whether a newline ended it.
        terminated: bool,
    },
    /// A line longer than the cap, skipped.
    TooLong {
        /// Whether a newline ended it.
        terminated: bool,
    },
}

/// Reads lines of at most `max` bytes from a buffered reader.
pub struct Lines<R> {
    inner: R,
    buf: Vec<u8>,
    max: usize,
    number: u64,
}

impl<R: BufRead> Lines<R> {
    /// Lines of `inner`, each at most `max` bytes.
    pub fn new(inner: R, max: usize) -> Self {
        Lines { inner, buf: Vec::new(), max, number: 0 }
    }

    /// The first bytes of the file without consuming them (at least one unless the file is empty).
    pub fn peek(&mut self) -> io::Result<&[u8]> {
        self.inner.fill_buf()
    }

    /// The next line and its number (1-based), `None` at the end of the file.
    pub fn next_line(&mut self) -> io::Result<Option<(u64, Item<'_>)>> {
        match self.read()? {
            Found::End => Ok(None),
            Found::Fits { terminated } => Ok(Some((self.number, Item::Line { text: &self.buf, terminated }))),
            Found::TooLong => {
                // Let go of what was read, and pass over the rest without keeping it.
                self.buf = Vec::new();
                let terminated = skip_line(&mut self.inner)?;
                Ok(Some((self.number, Item::TooLong { terminated })))
            }
        }
    }

    /// The first line, `None` when the file is empty or the line is longer than the cap: then
    /// nothing more is read (a file with no newline is not read to its end to find that out).
    pub fn first_line(&mut self) -> io::Result<Option<&[u8]>> {
        debug_assert_eq!(self.number, 0);
        Ok(match self.read()? {
            Found::Fits { .. } => Some(&self.buf),
            Found::End | Found::TooLong => None,
        })
    }

    /// Reads a line into `buf`, at most `max + 1` bytes of it.
    fn read(&mut self) -> io::Result<Found> {
        self.buf.clear();
        // One byte more than the cap: a line of exactly `max` bytes still ends in its newline.
        let limit = self.max as u64 + 1;
        let n = Read::take(&mut self.inner, limit).read_until(b'\n', &mut self.buf)?;
        if n == 0 {
            return Ok(Found::End);
        }
        self.number += 1;
        if self.buf.last() == Some(&b'\n') {
            self.buf.pop();
            return Ok(Found::Fits { terminated: true });
        }
        Ok(if self.buf.len() <= self.max { Found::Fits { terminated: false } } else { Found::TooLong })
    }
}

/// What [`Lines::read`] found.
enum Found {
    /// The end of the file.
    End,
    /// A whole line, in `buf`.
    Fits { terminated: bool },
    /// A line longer than the cap; its first bytes are in `buf`.
    TooLong,
}

/// Consumes bytes up to and including the next newline, holding 64 KiB of them at most; false
/// when the file ended first. (`read_until` finds the newline with std's optimised search.)
fn skip_line(r: &mut impl BufRead) -> io::Result<bool> {
    let mut scratch = Vec::new();
    loop {
        scratch.clear();
        if Read::take(&mut *r, 64 << 10).read_until(b'\n', &mut scratch)? == 0 {
            return Ok(false);
        }
        if scratch.last() == Some(&b'\n') {
            return Ok(true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(input: &[u8], max: usize) -> Vec<(u64, Result<String, bool>)> {
        let mut lines = Lines::new(std::io::BufReader::with_capacity(4, input), max);
        let mut out = Vec::new();
        while let Some((n, item)) = lines.next_line().unwrap() {
            let v = match item {
                Item::Line { text, terminated } => {
                    Ok(format!("{}{}", String::from_utf8_lossy(text), if terminated { "" } else { "|" }))
                }
                Item::TooLong { terminated } => Err(terminated),
            };
            out.push((n, v));
        }
        out
    }

    #[test]
    fn lines_up_to_the_cap_and_no_further() {
        let got = all(b"abc\n\nabcdefgh\nabcd\nxy", 4);
        let want = vec![
            (1, Ok("abc".to_string())),
            (2, Ok(String::new())),
            (3, Err(true)),
            (4, Ok("abcd".to_string())),
            (5, Ok("xy|".to_string())),
        ];
        assert_eq!(got, want);
        assert_eq!(all(b"abcdefgh", 4), vec![(1, Err(false))]);
        assert_eq!(all(b"", 4), vec![]);
        assert_eq!(all(b"\xff\xfe\n", 4), vec![(1, Ok("\u{fffd}\u{fffd}".to_string()))]);
    }

    #[test]
    fn a_long_line_is_not_held() {
        // 64 MiB of one line through a reader that yields it piece by piece: the buffer never
        // grows past the cap.
        let long = std::io::repeat(b'x').take(64 << 20).chain(&b"\nnext\n"[..]);
        let mut lines = Lines::new(std::io::BufReader::new(long), 1024);
        assert_eq!(lines.next_line().unwrap(), Some((1, Item::TooLong { terminated: true })));
        assert_eq!(lines.next_line().unwrap(), Some((2, Item::Line { text: b"next", terminated: true })));
    }
}
