//! Splits nginx config text into tokens with their line numbers: words, quoted strings (with
//! backslash escapes), `{`, `}` and `;`. `#` starts a comment to the end of the line when it
//! begins a token. `${var}` inside a word is part of the word, not a block.

use std::fmt;
use std::iter::Peekable;

/// One token and the 1-based line it starts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    pub kind: TokenKind,
    pub line: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenKind {
    /// A bare word or a quoted string, quotes removed and escapes applied.
    Word(String),
    Open,
    Close,
    Semicolon,
}

impl fmt::Display for TokenKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenKind::Word(word) => write!(f, "{word:?}"),
            TokenKind::Open => f.write_str("\"{\""),
            TokenKind::Close => f.write_str("\"}\""),
            TokenKind::Semicolon => f.write_str("\";\""),
        }
    }
}

/// Why the text cannot be split into tokens.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LexError {
    #[error("line {line}: unterminated {quote} string (opened here)")]
    UnterminatedQuote { line: usize, quote: char },
    #[error("line {line}: unterminated \"${{\" variable")]
    UnterminatedVariable { line: usize },
}

impl LexError {
    pub fn line(&self) -> usize {
        match self {
            LexError::UnterminatedQuote { line, .. } | LexError::UnterminatedVariable { line } => *line,
        }
    }
}

/// The characters still to read.
type Chars<'t> = Peekable<std::str::Chars<'t>>;

/// Tokenizes a whole file.
pub fn tokenize(text: &str) -> Result<Vec<Token>, LexError> {
    let mut tokens = Vec::new();
    let mut chars = text.chars().peekable();
    let mut line = 1;
    while let Some(&c) = chars.peek() {
        match c {
            '\n' => {
                line += 1;
                chars.next();
            }
            c if c.is_whitespace() => {
                chars.next();
            }
            '#' => {
                while chars.peek().is_some_and(|&c| c != '\n') {
                    chars.next();
                }
            }
            '{' | '}' | ';' => {
                chars.next();
                let kind = match c {
                    '{' => TokenKind::Open,
                    '}' => TokenKind::Close,
                    _ => TokenKind::Semicolon,
                };
                tokens.push(Token { kind, line });
            }
            '"' | '\'' => {
                let start = line;
                chars.next();
                let word = quoted(&mut chars, c, &mut line)?;
                tokens.push(Token { kind: TokenKind::Word(word), line: start });
            }
            _ => {
                let start = line;
                let word = bare_word(&mut chars, &mut line)?;
                tokens.push(Token { kind: TokenKind::Word(word), line: start });
            }
        }
    }
    Ok(tokens)
}

/// The rest of a string opened by `quote` (already read), through its closing quote.
fn quoted(chars: &mut Chars, quote: char, line: &mut usize) -> Result<String, LexError> {
    let start = *line;
    let mut word = String::new();
    loop {
        match chars.next() {
            None => return Err(LexError::UnterminatedQuote { line: start, quote }),
            Some(q) if q == quote => return Ok(word),
            Some('\\') => match chars.next() {
                None => return Err(LexError::UnterminatedQuote { line: start, quote }),
                Some(escaped) => {
                    *line += usize::from(escaped == '\n');
                    unescape(escaped, &mut word);
                }
            },
            Some(other) => {
                *line += usize::from(other == '\n');
                word.push(other);
            }
        }
    }
}

/// A word up to whitespace, `;`, `{` or `}`; a `${var}` in it is kept whole.
fn bare_word(chars: &mut Chars, line: &mut usize) -> Result<String, LexError> {
    let start = *line;
    let mut word = String::new();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() || matches!(c, ';' | '{' | '}') {
            break;
        }
        chars.next();
        match c {
            '\\' => {
                if let Some(escaped) = chars.next() {
                    *line += usize::from(escaped == '\n');
                    unescape(escaped, &mut word);
                }
            }
            '$' if chars.peek() == Some(&'{') => braced_variable(chars, &mut word, start)?,
            _ => word.push(c),
        }
    }
    Ok(word)
}

/// `${name}` after its `$` (already read), onto `word`; it must close on its line.
fn braced_variable(chars: &mut Chars, word: &mut String, start: usize) -> Result<(), LexError> {
    word.push('$');
    loop {
        match chars.next() {
            None | Some('\n') => return Err(LexError::UnterminatedVariable { line: start }),
            Some('}') => {
                word.push('}');
                return Ok(());
            }
            Some(inner) => word.push(inner),
        }
    }
}

/// Like nginx: `\t`, `\r`, `\n`, and a backslash before a quote, `\` or a space drop the backslash;
/// before anything else it stays (regexes keep `\d`).
fn unescape(escaped: char, word: &mut String) {
    match escaped {
        't' => word.push('\t'),
        'r' => word.push('\r'),
        'n' => word.push('\n'),
        '"' | '\'' | '\\' | ' ' | ';' | '{' | '}' | '$' | '#' | '\n' => word.push(escaped),
        other => {
            word.push('\\');
            word.push(other);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(text: &str) -> Vec<String> {
        tokenize(text)
            .unwrap()
            .into_iter()
            .map(|t| match t.kind {
                TokenKind::Word(w) => w,
                other => other.to_string().trim_matches('"').to_string(),
            })
            .collect()
    }

    #[test]
    fn directives_blocks_and_comments_are_split() {
        assert_eq!(words("stream { # comment ; {\n  listen 443;}\n"), ["stream", "{", "listen", "443", ";", "}"]);
    }

    #[test]
    fn quotes_and_escapes_are_removed() {
        assert_eq!(words(r#"a "b c" 'd;e' "f\"g" h\ i;"#), ["a", "b c", "d;e", "f\"g", "h i", ";"]);
    }

    #[test]
    fn braced_variables_stay_in_the_word() {
        assert_eq!(words("proxy_pass ${backend}x;"), ["proxy_pass", "${backend}x", ";"]);
    }

    #[test]
    fn hash_inside_a_word_is_not_a_comment() {
        assert_eq!(words("a b#c;"), ["a", "b#c", ";"]);
    }

    #[test]
    fn lines_are_counted_across_quoted_newlines() {
        let tokens = tokenize("a \"x\ny\" ;\nb;").unwrap();
        assert_eq!(tokens[0].line, 1);
        assert_eq!(tokens[1].line, 1);
        assert_eq!(tokens[2].line, 2);
        assert_eq!(tokens[3].line, 3);
    }

    #[test]
    fn unterminated_quote_names_its_line() {
        assert_eq!(tokenize("a;\nb \"open;\n\n"), Err(LexError::UnterminatedQuote { line: 2, quote: '"' }));
        assert_eq!(tokenize("a ${x"), Err(LexError::UnterminatedVariable { line: 1 }));
        assert_eq!(tokenize("a 'x\\"), Err(LexError::UnterminatedQuote { line: 1, quote: '\'' }));
    }
}
