//! The directive tree of one nginx config file: `name args… ;` or `name args… { children }`.
//!
//! Block nesting is capped at [`MAX_BLOCK_DEPTH`] so a hostile file cannot exhaust the stack.

use std::path::PathBuf;
use std::sync::Arc;

use super::lexer::{Token, TokenKind};

/// Deepest block nesting accepted; real configs use 3 (`stream { server { … } }` inside the top level).
pub const MAX_BLOCK_DEPTH: usize = 32;

/// One directive and where it was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directive {
    pub name: String,
    pub args: Vec<String>,
    /// `Some` for a block directive, even an empty one.
    pub block: Option<Vec<Directive>>,
    pub file: Arc<PathBuf>,
    pub line: usize,
}

impl Directive {
    /// The children of a block directive; none for a simple one.
    pub fn children(&self) -> &[Directive] {
        self.block.as_deref().unwrap_or_default()
    }

    /// `file:line`, for messages.
    pub fn at(&self) -> String {
        format!("{}:{}", self.file.display(), self.line)
    }
}

/// Why the tokens do not form directives.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SyntaxError {
    #[error("line {line}: unexpected {found}")]
    Unexpected { line: usize, found: String },
    #[error("line {line}: directive {name:?} has no closing \";\"")]
    MissingSemicolon { line: usize, name: String },
    #[error("line {line}: block {name:?} is not closed with \"}}\"")]
    UnclosedBlock { line: usize, name: String },
    #[error("line {line}: blocks nested deeper than {MAX_BLOCK_DEPTH}")]
    TooDeep { line: usize },
}

impl SyntaxError {
    pub fn line(&self) -> usize {
        match self {
            SyntaxError::Unexpected { line, .. }
            | SyntaxError::MissingSemicolon { line, .. }
            | SyntaxError::UnclosedBlock { line, .. }
            | SyntaxError::TooDeep { line } => *line,
        }
    }
}

/// Builds the directive tree of one file's tokens.
pub fn parse(tokens: &[Token], file: Arc<PathBuf>) -> Result<Vec<Directive>, SyntaxError> {
    let mut parser = Parser { tokens, next: 0, file };
    let directives = parser.block_body(0)?;
    match parser.tokens.get(parser.next) {
        None => Ok(directives),
        Some(token) => Err(SyntaxError::Unexpected { line: token.line, found: token.kind.to_string() }),
    }
}

struct Parser<'a> {
    tokens: &'a [Token],
    next: usize,
    file: Arc<PathBuf>,
}

impl Parser<'_> {
    /// Directives until a `}` (left unconsumed) or the end.
    fn block_body(&mut self, depth: usize) -> Result<Vec<Directive>, SyntaxError> {
        let mut directives = Vec::new();
        while let Some(token) = self.tokens.get(self.next) {
            match &token.kind {
                TokenKind::Close => break,
                TokenKind::Word(name) => {
                    self.next += 1;
                    directives.push(self.directive(name.clone(), token.line, depth)?);
                }
                other => return Err(SyntaxError::Unexpected { line: token.line, found: other.to_string() }),
            }
        }
        Ok(directives)
    }

    fn directive(&mut self, name: String, line: usize, depth: usize) -> Result<Directive, SyntaxError> {
        let mut args = Vec::new();
        loop {
            let Some(token) = self.tokens.get(self.next) else {
                return Err(SyntaxError::MissingSemicolon { line, name });
            };
            self.next += 1;
            match &token.kind {
                TokenKind::Word(word) => args.push(word.clone()),
                TokenKind::Semicolon => {
                    return Ok(Directive { name, args, block: None, file: self.file.clone(), line });
                }
                TokenKind::Open => {
                    if depth + 1 > MAX_BLOCK_DEPTH {
                        return Err(SyntaxError::TooDeep { line: token.line });
                    }
                    let children = self.block_body(depth + 1)?;
                    match self.tokens.get(self.next) {
                        Some(Token { kind: TokenKind::Close, .. }) => self.next += 1,
                        _ => return Err(SyntaxError::UnclosedBlock { line, name }),
                    }
                    return Ok(Directive { name, args, block: Some(children), file: self.file.clone(), line });
                }
                TokenKind::Close => return Err(SyntaxError::MissingSemicolon { line, name }),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::lexer::tokenize;
    use super::*;

    fn parse_text(text: &str) -> Result<Vec<Directive>, SyntaxError> {
        parse(&tokenize(text).unwrap(), Arc::new(PathBuf::from("t.conf")))
    }

    #[test]
    fn nested_blocks_keep_names_args_and_lines() {
        let tree = parse_text("user nginx;\nstream {\n  server {\n    listen 443 ssl;\n  }\n}\n").unwrap();
        assert_eq!(tree.len(), 2);
        assert_eq!(tree[0].args, ["nginx"]);
        let listen = &tree[1].children()[0].children()[0];
        assert_eq!(
            (listen.name.as_str(), listen.args.clone(), listen.line),
            ("listen", vec!["443".into(), "ssl".into()], 4)
        );
    }

    #[test]
    fn broken_structure_names_the_line() {
        assert_eq!(parse_text("a {\n b;\n").unwrap_err(), SyntaxError::UnclosedBlock { line: 1, name: "a".into() });
        assert_eq!(parse_text("a;\nb c\n").unwrap_err(), SyntaxError::MissingSemicolon { line: 2, name: "b".into() });
        assert_eq!(parse_text("a;\n}\n").unwrap_err().line(), 2);
        assert_eq!(parse_text(";").unwrap_err().line(), 1);
        assert_eq!(parse_text("a { b }").unwrap_err(), SyntaxError::MissingSemicolon { line: 1, name: "b".into() });
    }

    #[test]
    fn deep_nesting_is_refused_not_a_stack_overflow() {
        let text = "a {".repeat(100_000);
        assert!(matches!(parse_text(&text), Err(SyntaxError::TooDeep { .. })));
        let ok = format!("{}{}", "a {".repeat(MAX_BLOCK_DEPTH), "}".repeat(MAX_BLOCK_DEPTH));
        assert!(parse_text(&ok).is_ok());
    }

    /// The shipped fixtures, cut at every character: the lexer and parser answer or refuse,
    /// never panic.
    #[test]
    fn every_prefix_of_every_fixture_parses_or_fails_cleanly() {
        // include_str! resolves from this file, so the fuzz crate (which compiles this module
        // too) finds the fixtures as well.
        let fixtures = [
            ("passthrough.conf", include_str!("../../../../tests/data/nginx/passthrough.conf")),
            ("mqtt_terminate.conf", include_str!("../../../../tests/data/nginx/mqtt_terminate.conf")),
            ("untranslatable.conf", include_str!("../../../../tests/data/nginx/untranslatable.conf")),
            ("full/nginx.conf", include_str!("../../../../tests/data/nginx/full/nginx.conf")),
        ];
        for (name, text) in fixtures {
            for end in (0..=text.len()).filter(|&end| text.is_char_boundary(end)) {
                if let Ok(tokens) = tokenize(&text[..end]) {
                    let _ = parse(&tokens, Arc::new(PathBuf::from(name)));
                }
            }
        }
    }
}
