//! HAProxy config text → lines of words, each with its line number.
//!
//! HAProxy's rules: words are separated by spaces or tabs; `#` starts a comment outside quotes;
//! `"…"` quotes weakly (escapes apply inside), `'…'` strongly (nothing is special but the closing
//! quote); outside single quotes `\` escapes the next character (`\ `, `\#`, `\\`, `\"`, `\'`,
//! `\$`, and `\r`, `\n`, `\t`, `\xHH`). A line never continues on the next one: a `\` at the end
//! of a line is an error here, as it would silently be something else in HAProxy. Environment
//! variables (`$NAME`, `${NAME}`) are not expanded: they are an error, with the line.

/// One line that holds at least one word.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// 1-based.
    pub number: usize,
    pub words: Vec<String>,
}

impl Line {
    /// The first word: the keyword.
    pub fn keyword(&self) -> &str {
        self.words.first().map_or("", String::as_str)
    }

    /// The words after the keyword.
    pub fn args(&self) -> &[String] {
        self.words.get(1..).unwrap_or_default()
    }
}

/// Why the text is not a config HAProxy would read the same way.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LexError {
    #[error("line {line}: unterminated {quote} quote")]
    Unterminated { line: usize, quote: char },
    #[error("line {line}: a `\\` at the end of a line does not continue it in HAProxy")]
    TrailingBackslash { line: usize },
    #[error("line {line}: `\\x` needs two hex digits")]
    BadHexEscape { line: usize },
    #[error("line {line}: environment variables (`${name}`) are not expanded by the importer; write the value")]
    Variable { line: usize, name: String },
}

impl LexError {
    pub fn line(&self) -> usize {
        match self {
            LexError::Unterminated { line, .. }
            | LexError::TrailingBackslash { line }
            | LexError::BadHexEscape { line }
            | LexError::Variable { line, .. } => *line,
        }
    }
}

/// Digits of a `\xHH` escape.
const HEX_ESCAPE_DIGITS: usize = 2;
const HEX_RADIX: u32 = 16;

/// The lines of `text` that hold words.
pub fn tokenize(text: &str) -> Result<Vec<Line>, LexError> {
    let mut lines = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let number = index + 1;
        let words = words(raw, number)?;
        if !words.is_empty() {
            lines.push(Line { number, words });
        }
    }
    Ok(lines)
}

/// Where the lexer is within a line.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Quote {
    None,
    Double,
    Single,
}

/// The words of one line.
fn words(raw: &str, line: usize) -> Result<Vec<String>, LexError> {
    let mut words = Vec::new();
    let mut word = String::new();
    // A word may be empty (`""`), so whether one is open is kept apart from its text.
    let mut in_word = false;
    let mut quote = Quote::None;
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Quote::Single, '\'') => quote = Quote::None,
            (Quote::Single, c) => word.push(c),
            (Quote::Double, '"') => quote = Quote::None,
            (Quote::None, ' ' | '\t') => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            (Quote::None, '#') => break,
            (Quote::None, '"') => (quote, in_word) = (Quote::Double, true),
            (Quote::None, '\'') => (quote, in_word) = (Quote::Single, true),
            (_, '\\') => {
                word.push(escape(&mut chars, line)?);
                in_word = true;
            }
            (_, '$') if chars.peek().is_some_and(|&next| next == '{' || next == '_' || next.is_ascii_alphabetic()) => {
                let name: String = chars.take_while(|&c| c != '}' && c != ' ' && c != '"').collect();
                return Err(LexError::Variable { line, name: name.trim_start_matches('{').to_string() });
            }
            (_, c) => {
                word.push(c);
                in_word = true;
            }
        }
    }
    match quote {
        Quote::None => {}
        Quote::Double => return Err(LexError::Unterminated { line, quote: '"' }),
        Quote::Single => return Err(LexError::Unterminated { line, quote: '\'' }),
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

/// The character a `\` escape stands for (the `\` itself is consumed).
fn escape(chars: &mut std::iter::Peekable<std::str::Chars>, line: usize) -> Result<char, LexError> {
    match chars.next() {
        None => Err(LexError::TrailingBackslash { line }),
        Some('r') => Ok('\r'),
        Some('n') => Ok('\n'),
        Some('t') => Ok('\t'),
        Some('x') => {
            let digits: String = chars.take(HEX_ESCAPE_DIGITS).collect();
            match u8::from_str_radix(&digits, HEX_RADIX) {
                Ok(byte) if digits.len() == HEX_ESCAPE_DIGITS => Ok(char::from(byte)),
                _ => Err(LexError::BadHexEscape { line }),
            }
        }
        Some(other) => Ok(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words_of(text: &str) -> Vec<Vec<String>> {
        tokenize(text).unwrap().into_iter().map(|line| line.words).collect()
    }

    #[test]
    fn comments_blank_lines_and_indentation_are_skipped_with_line_numbers_kept() {
        let lines = tokenize("# top\n\nglobal  # trailing\n\tmaxconn 100\n   \n").unwrap();
        assert_eq!(lines.len(), 2);
        assert_eq!((lines[0].number, lines[0].keyword()), (3, "global"));
        assert_eq!((lines[1].number, lines[1].args()), (4, &["100".to_string()][..]));
    }

    #[test]
    fn quotes_and_escapes_make_one_word() {
        assert_eq!(words_of(r#"a "b c" 'd e' f\ g"#), [["a", "b c", "d e", "f g"]]);
        assert_eq!(words_of(r#"x"y z"w 'q\n' "\#" \# "" end"#), [["xy zw", "q\\n", "#", "#", "", "end"]]);
        assert_eq!(words_of(r"hex \x41\x62 tab\tx"), [["hex", "Ab", "tab\tx"]]);
        assert_eq!(words_of(r#"'a "b"' "c 'd'""#), [["a \"b\"", "c 'd'"]]);
        assert_eq!(words_of("acl x req_ssl_sni -i a.test#b"), [["acl", "x", "req_ssl_sni", "-i", "a.test"]]);
    }

    #[test]
    fn broken_lines_are_errors_with_their_line() {
        assert_eq!(tokenize("global\n  log \"x\n"), Err(LexError::Unterminated { line: 2, quote: '"' }));
        assert_eq!(tokenize("a\nb\nc 'x").unwrap_err().line(), 3);
        assert_eq!(tokenize("bind :443 \\\n  ssl"), Err(LexError::TrailingBackslash { line: 1 }));
        assert_eq!(tokenize("x \\x4"), Err(LexError::BadHexEscape { line: 1 }));
        assert!(matches!(tokenize("\ncrt-base \"${CERTS}\""), Err(LexError::Variable { line: 2, .. })));
        assert_eq!(words_of("cost \\$5 '$HOME' 5$"), [["cost", "$5", "$HOME", "5$"]]);
    }
}
