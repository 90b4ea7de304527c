//! Lines → sections: a line whose keyword starts a section (`global`, `defaults`, `frontend`,
//! `backend`, `listen`, and the sections the importer does not translate) opens it, and every
//! following line belongs to it until the next one. HAProxy has no blocks and no nesting.

use super::lexer::Line;

/// The kinds of section HAProxy knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Global,
    Defaults,
    Frontend,
    Backend,
    /// A frontend and a backend in one.
    Listen,
    /// `userlist`, `peers`, `resolvers`, … : nothing the importer translates.
    Other,
}

/// Section keywords with nothing to translate.
const OTHER_SECTIONS: &[&str] = &[
    "userlist",
    "peers",
    "resolvers",
    "mailers",
    "program",
    "http-errors",
    "ring",
    "cache",
    "crt-store",
    "traces",
    "log-forward",
    "fcgi-app",
];

/// One section: its header line and the lines under it.
#[derive(Debug, Clone)]
pub struct Section {
    pub kind: Kind,
    /// The section keyword as written (`peers`, `frontend`, …).
    pub keyword: String,
    /// `frontend NAME`; `defaults` and `global` may have none.
    pub name: Option<String>,
    /// `defaults NAME`'s or a proxy's `from NAME`: the defaults section it takes settings from.
    pub from: Option<String>,
    pub line: usize,
    pub body: Vec<Line>,
}

/// Sections in file order, and the lines that come before any section.
pub fn split(lines: Vec<Line>) -> (Vec<Section>, Vec<Line>) {
    let mut sections: Vec<Section> = Vec::new();
    let mut outside = Vec::new();
    for line in lines {
        if let Some(kind) = section_kind(line.keyword()) {
            let args = line.args();
            let from = match args {
                [_, from, name, ..] if from == "from" => Some(name.clone()),
                _ => None,
            };
            sections.push(Section {
                kind,
                keyword: line.keyword().to_string(),
                name: args.first().cloned(),
                from,
                line: line.number,
                body: Vec::new(),
            });
        } else if let Some(section) = sections.last_mut() {
            section.body.push(line);
        } else {
            outside.push(line);
        }
    }
    (sections, outside)
}

fn section_kind(keyword: &str) -> Option<Kind> {
    Some(match keyword {
        "global" => Kind::Global,
        "defaults" => Kind::Defaults,
        "frontend" => Kind::Frontend,
        "backend" => Kind::Backend,
        "listen" => Kind::Listen,
        other if OTHER_SECTIONS.contains(&other) => Kind::Other,
        _ => return None,
    })
}

impl Section {
    /// The name, or `""` for unnamed `global` / `defaults`.
    pub fn name(&self) -> &str {
        self.name.as_deref().unwrap_or_default()
    }

    /// Whether it holds frontend keywords (`bind`, `use_backend`, …).
    pub fn is_frontend(&self) -> bool {
        matches!(self.kind, Kind::Frontend | Kind::Listen)
    }

    /// Whether it holds backend keywords (`server`, `balance`, …).
    pub fn is_backend(&self) -> bool {
        matches!(self.kind, Kind::Backend | Kind::Listen)
    }
}

#[cfg(test)]
mod tests {
    use super::super::lexer::tokenize;
    use super::*;

    #[test]
    fn lines_belong_to_the_section_above_them() {
        let text = "stray 1\nglobal\n maxconn 10\ndefaults base\n mode tcp\nfrontend fe from base\n bind :443\nbackend be\n server a 127.0.0.1:1\npeers p\n peer x 1.2.3.4:1\n";
        let (sections, outside) = split(tokenize(text).unwrap());
        assert_eq!(outside.len(), 1);
        assert_eq!(outside[0].number, 1);
        let kinds: Vec<(Kind, &str, usize)> = sections.iter().map(|s| (s.kind, s.name(), s.body.len())).collect();
        assert_eq!(
            kinds,
            [
                (Kind::Global, "", 1),
                (Kind::Defaults, "base", 1),
                (Kind::Frontend, "fe", 1),
                (Kind::Backend, "be", 1),
                (Kind::Other, "p", 1)
            ]
        );
        assert_eq!(sections[2].from.as_deref(), Some("base"));
        assert_eq!(sections[3].body[0].number, 9);
    }
}
