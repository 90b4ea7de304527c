//! Which outcomes a corpus reaches: a histogram of result kinds per target, on stable Rust.
//! A coarse, source-level complement to libFuzzer's edge counts (which also count panic and drop
//! edges): every `return` of the parser under test should show up here for a good corpus.
//!
//! `cargo run --manifest-path fuzz/Cargo.toml --example outcomes -- <target> <dir>...`

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use snigate::hello::{self, Progress};

fn label_hello(bytes: &[u8]) -> String {
    match hello::parse(bytes, snigate_fuzz::DEFAULT_MAX_HELLO_BYTES) {
        Ok(Progress::Complete(hello)) => format!(
            "Complete(sni {:?}, alpn {}, multi-record {})",
            hello.sni_status,
            if hello.alpn.is_empty() { "none" } else { "some" },
            hello.records_len != 5 + usize::from(u16::from_be_bytes([bytes[3], bytes[4]]))
        ),
        Ok(other) => format!("{other:?}"),
        Err(hello::HelloError::Malformed(why)) => format!("Err(Malformed({why:?}))"),
        Err(error) => {
            let text = format!("{error:?}");
            format!("Err({})", text.split([' ', '(', '{']).next().unwrap_or(&text))
        }
    }
}

fn label_inbound(bytes: &[u8]) -> String {
    match snigate::inbound::parse(bytes) {
        Ok(None) => "Ok(None): needs more".into(),
        Ok(Some((client, _))) => {
            let version = if bytes.starts_with(b"PROXY ") { "v1" } else { "v2" };
            format!("Ok(Some): {version}, client {}", if client.is_some() { "address" } else { "none" })
        }
        Err(error) => {
            // Keep the message's shape, not its numbers.
            let text: String = error.to_string().chars().filter(|c| !c.is_ascii_digit()).collect();
            format!("Err: {text}")
        }
    }
}

fn label_config(bytes: &[u8]) -> String {
    let Ok(source) = std::str::from_utf8(bytes) else {
        return "not UTF-8".into();
    };
    match snigate::config::parse(source, Path::new(snigate_fuzz::CONFIG_PATH)) {
        Ok(_) => "Ok".into(),
        Err(errors) => {
            let first = &errors.0[0].message;
            let shape: String = first.chars().take_while(|&c| c != '"' && c != '`' && c != ':').collect();
            format!("Err: {}", shape.trim())
        }
    }
}

fn label_nginx(bytes: &[u8]) -> String {
    use snigate_fuzz::nginx::{ast, lexer, translate};
    let Ok(text) = std::str::from_utf8(bytes) else {
        return "not UTF-8".into();
    };
    let tokens = match lexer::tokenize(text) {
        Ok(tokens) => tokens,
        Err(_) => return "lex error".into(),
    };
    let Ok(tree) = ast::parse(&tokens, std::sync::Arc::new(snigate_fuzz::NGINX_PATH.into())) else {
        return "syntax error".into();
    };
    match translate::translate(&tree, std::path::Path::new(snigate_fuzz::NGINX_PATH), &Default::default()) {
        (Some(file), _) => format!("translated: {} route(s)", file.routes.len()),
        (None, _) => "refused".into(),
    }
}

fn label_haproxy(bytes: &[u8]) -> String {
    use snigate_fuzz::haproxy::{import_text, ImportError, Options};
    let Ok(text) = std::str::from_utf8(bytes) else {
        return "not UTF-8".into();
    };
    match import_text(text, std::path::Path::new(snigate_fuzz::HAPROXY_PATH), &Options::default()) {
        Ok(imported) => format!("translated: {} warning(s)", imported.warnings.len()),
        Err(ImportError::Syntax { .. }) => "syntax error".into(),
        Err(_) => "refused".into(),
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let target = args.next().expect("usage: outcomes <target> <dir>...");
    let label: fn(&[u8]) -> String = match target.as_str() {
        "hello_parse" => label_hello,
        "inbound_parse" => label_inbound,
        "config_parse" => label_config,
        "nginx_import" => label_nginx,
        "haproxy_import" => label_haproxy,
        other => panic!("unknown target {other}"),
    };
    let mut histogram: BTreeMap<String, usize> = BTreeMap::new();
    let mut total = 0;
    for dir in args {
        for entry in fs::read_dir(&dir).unwrap() {
            let bytes = fs::read(entry.unwrap().path()).unwrap();
            *histogram.entry(label(&bytes)).or_default() += 1;
            total += 1;
        }
    }
    for (label, count) in &histogram {
        println!("{count:>6}  {label}");
    }
    println!("{total:>6}  inputs, {} kinds", histogram.len());
}
