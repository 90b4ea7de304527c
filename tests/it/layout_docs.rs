//! The maps of the code stay true: every source file of the library and the command is named in
//! ARCHITECTURE.md's code map, every folder of `src/` in the README's Layout section, and every
//! path the Layout table names exists.

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The `.rs` files below `dir`, except `mod.rs` and the importers' steps (ARCHITECTURE.md
/// describes `nginx/` and `haproxy/` as one unit each; their own module docs list the steps).
fn source_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            if path.file_name().is_some_and(|name| name != "nginx" && name != "haproxy") {
                source_files(&path, out);
            }
        } else if path.extension().is_some_and(|e| e == "rs") && path.file_name().is_some_and(|n| n != "mod.rs") {
            out.push(path);
        }
    }
}

/// Whether a file or folder called `name` is anywhere below `dir`.
fn exists_below(dir: &Path, name: &str) -> bool {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .any(|path| path.file_name().is_some_and(|n| n == name) || (path.is_dir() && exists_below(&path, name)))
}

fn readme_layout() -> String {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let start = readme.find("\n## Layout").expect("README has a Layout section");
    let rest = &readme[start + 1..];
    let end = rest[3..].find("\n## ").map_or(rest.len(), |i| i + 3);
    rest[..end].to_string()
}

#[test]
fn architecture_code_map_names_every_source_file() {
    let map = std::fs::read_to_string(root().join("ARCHITECTURE.md")).unwrap();
    let mut files = Vec::new();
    source_files(&root().join("src"), &mut files);
    assert!(files.len() > 20, "found the sources: {files:?}");
    for file in files {
        let name = file.file_name().unwrap().to_string_lossy().to_string();
        assert!(
            map.contains(&format!("`{name}`")) || map.contains(&format!("{name}`")),
            "ARCHITECTURE.md does not name {}",
            file.display()
        );
    }
}

#[test]
fn readme_layout_names_every_folder_and_only_paths_that_exist() {
    let layout = readme_layout();
    for entry in std::fs::read_dir(root().join("src")).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            let name = format!("`src/{}/", path.file_name().unwrap().to_string_lossy());
            assert!(layout.contains(&name), "the README Layout does not name {name}");
        }
    }
    for row in layout.lines().filter(|line| line.starts_with("| `")) {
        let folder = row.split('`').nth(1).unwrap();
        if folder.contains(',') || !folder.contains('/') {
            continue;
        }
        assert!(root().join(folder).exists(), "the README Layout names {folder}, which does not exist");
        let cells: Vec<&str> = row.split('|').collect();
        for name in cells[2].split('`').skip(1).step_by(2).filter(|n| n.ends_with(".rs") || n.ends_with('/')) {
            let name = name.trim_end_matches('/');
            assert!(
                exists_below(&root().join(folder), name),
                "the README Layout names {folder}…{name}, which does not exist"
            );
        }
    }
}
