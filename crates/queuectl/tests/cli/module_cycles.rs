//! The house rule of docs/architecture.md ("Layers inside a crate"): no two files of a crate
//! import each other, directly or round a loop. A file's imports are the `crate::`, `super::`
//! and `self::` paths it names, and the paths that start at a child module it declares; the
//! crate root (lib.rs, main.rs) is the wiring that declares every module and is left out, and so
//! is test code (`#[cfg(test)] mod … { … }`), which may reach anywhere.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A module path inside one crate: `[]` is the root, `["domain", "keys"]` is
/// `src/domain/keys.rs` or `src/domain/keys/mod.rs`.
type Module = Vec<String>;

#[test]
fn no_crate_has_an_import_cycle_between_its_files() {
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").canonicalize().expect("crates/");
    let mut found = Vec::new();
    let mut files = 0;
    for entry in std::fs::read_dir(&crates).expect("read crates/") {
        let src = entry.expect("crates/ entry").path().join("src");
        if !src.is_dir() {
            continue;
        }
        let modules = modules_of(&src);
        files += modules.len();
        for cycle in cycles(&modules) {
            let names: Vec<String> = cycle
                .iter()
                .map(|m| modules[m].strip_prefix(&crates).unwrap_or(&modules[m]).display().to_string())
                .collect();
            found.push(names.join(" <-> "));
        }
    }
    assert!(files > 100, "the check read only {files} files: is the crates/ path right?");
    assert!(found.is_empty(), "import cycles between files:\n{}", found.join("\n"));
}

#[test]
fn the_check_finds_a_loop_through_super_a_child_and_a_brace_group() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("domain")).expect("mkdir");
    let write = |path: &str, text: &str| std::fs::write(src.join(path), text).expect("write");
    write("lib.rs", "mod config;\nmod domain;\nmod state;\npub use domain::keys::Key;\n");
    write("config.rs", "use crate::domain::{chain, keys::{self, Key}};\npub struct KeysConfig;\n");
    write("domain/mod.rs", "pub mod chain;\npub mod keys;\n");
    write("domain/chain.rs", "pub fn link() {}\n#[cfg(test)]\nmod tests { use crate::state::State; }\n");
    write("domain/keys.rs", "// crate::state is named in a comment only\nuse super::super::config::KeysConfig;\n");
    write("state.rs", "pub struct State(crate::domain::chain::Link, \"crate::config\");\n");
    let modules = modules_of(&src);
    let found: Vec<Vec<String>> =
        cycles(&modules).into_iter().map(|c| c.iter().map(|m| modules[m].display().to_string()).collect()).collect();
    assert_eq!(
        found,
        vec![vec![src.join("config.rs").display().to_string(), src.join("domain/keys.rs").display().to_string()]]
    );
}

/// Every file of the crate's module tree (but the root and `src/bin/`), by module path.
fn modules_of(src: &Path) -> BTreeMap<Module, PathBuf> {
    let mut out = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read src dir") {
            let path = entry.expect("src entry").path();
            let rel = path.strip_prefix(src).expect("under src");
            if rel.starts_with("bin") {
                continue;
            }
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let mut module: Module = rel.iter().map(|s| s.to_string_lossy().into_owned()).collect();
            let last = module.pop().unwrap_or_default();
            match last.as_str() {
                "mod.rs" => {}
                "lib.rs" | "main.rs" if module.is_empty() => continue,
                other => module.push(other.trim_end_matches(".rs").to_string()),
            }
            out.insert(module, path);
        }
    }
    out
}

/// The loops of the import graph (strongly connected parts with more than one file).
fn cycles(modules: &BTreeMap<Module, PathBuf>) -> Vec<Vec<Module>> {
    let edges: BTreeMap<Module, BTreeSet<Module>> = modules
        .iter()
        .map(|(module, path)| {
            let text = std::fs::read_to_string(path).expect("read source");
            (module.clone(), imports(module, &text, modules))
        })
        .collect();
    // Two files share a loop when each reaches the other.
    let reach = |from: &Module| {
        let mut seen = BTreeSet::new();
        let mut todo = vec![from.clone()];
        while let Some(m) = todo.pop() {
            for next in edges.get(&m).into_iter().flatten() {
                if seen.insert(next.clone()) {
                    todo.push(next.clone());
                }
            }
        }
        seen
    };
    let reaches: BTreeMap<&Module, BTreeSet<Module>> = modules.keys().map(|m| (m, reach(m))).collect();
    let mut placed = BTreeSet::new();
    let mut out = Vec::new();
    for m in modules.keys() {
        if placed.contains(m) || !reaches[m].contains(m) {
            continue;
        }
        let part: Vec<Module> = reaches[m].iter().filter(|o| reaches[*o].contains(m)).cloned().collect();
        placed.extend(part.iter().cloned());
        out.push(part);
    }
    out
}

/// The other files of the crate that `module`'s code names.
fn imports(module: &Module, text: &str, modules: &BTreeMap<Module, PathBuf>) -> BTreeSet<Module> {
    let code = without_test_modules(&code_only(text));
    let children: BTreeSet<&str> = declared_children(&code);
    let tokens = tokenize(&code);
    let mut paths = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        let starts = matches!(tokens[i].as_str(), "crate" | "super" | "self") || children.contains(tokens[i].as_str());
        let after_colons = i > 0 && tokens[i - 1] == "::";
        if starts && !after_colons && tokens.get(i + 1).is_some_and(|t| t == "::") {
            i = expand(&tokens, i, Vec::new(), &mut paths);
        } else {
            i += 1;
        }
    }
    let mut out = BTreeSet::new();
    for path in paths {
        let Some(absolute) = resolve(module, &path) else { continue };
        // The longest prefix that is a file of this crate is what the path imports.
        let target = (1..=absolute.len()).rev().map(|n| absolute[..n].to_vec()).find(|p| modules.contains_key(p));
        if let Some(target) = target.filter(|t| t != module) {
            out.insert(target);
        }
    }
    out
}

/// Reads one path starting at `tokens[i]` (with `prefix` before it), expanding `{a, b::c}`
/// groups into `paths`; returns the index after it.
fn expand(tokens: &[String], mut i: usize, mut prefix: Vec<String>, paths: &mut Vec<Vec<String>>) -> usize {
    loop {
        match tokens.get(i).map(String::as_str) {
            Some("{") => {
                i += 1;
                while i < tokens.len() && tokens[i] != "}" {
                    if tokens[i] == "," {
                        i += 1;
                        continue;
                    }
                    i = expand(tokens, i, prefix.clone(), paths);
                    // `as name` and anything else up to the next item
                    while i < tokens.len() && tokens[i] != "," && tokens[i] != "}" {
                        i += 1;
                    }
                }
                return i + 1;
            }
            Some(t) if is_ident(t) => {
                prefix.push(t.to_string());
                i += 1;
                if tokens.get(i).is_some_and(|t| t == "::") {
                    i += 1;
                } else {
                    paths.push(prefix);
                    return i;
                }
            }
            _ => {
                paths.push(prefix);
                return i;
            }
        }
    }
}

/// `crate::`, `super::` and `self::` made absolute; a path starting at a declared child is
/// relative to `module`.
fn resolve(module: &Module, path: &[String]) -> Option<Module> {
    let mut at = module.clone();
    let mut rest = path;
    match path.first().map(String::as_str) {
        Some("crate") => {
            at.clear();
            rest = &path[1..];
        }
        Some("self") => rest = &path[1..],
        Some("super") => {
            while rest.first().is_some_and(|s| s == "super") {
                at.pop()?;
                rest = &rest[1..];
            }
        }
        _ => {}
    }
    at.extend(rest.iter().filter(|s| *s != "self").cloned());
    Some(at)
}

fn declared_children(code: &str) -> BTreeSet<&str> {
    let words: Vec<&str> = code.split(|c: char| !(c.is_alphanumeric() || c == '_' || c == ';')).collect();
    words.windows(2).filter(|w| w[0] == "mod").filter_map(|w| w[1].strip_suffix(';')).collect()
}

fn is_ident(t: &str) -> bool {
    t.chars().next().is_some_and(|c| c.is_alphabetic() || c == '_')
        && t.chars().all(|c| c.is_alphanumeric() || c == '_')
}

/// Identifiers, `::`, and single punctuation characters.
fn tokenize(code: &str) -> Vec<String> {
    let chars: Vec<char> = code.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_alphanumeric() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            out.push(chars[start..i].iter().collect());
        } else if c == ':' && chars.get(i + 1) == Some(&':') {
            out.push("::".into());
            i += 2;
        } else {
            if !c.is_whitespace() {
                out.push(c.to_string());
            }
            i += 1;
        }
    }
    out
}

/// The text with comments, string and char literals blanked (lifetimes kept).
fn code_only(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
            out.push(' ');
        } else if c == 'r' && (next == Some('"') || next == Some('#')) && !prev_is_ident(&chars, i) {
            // raw string r"…" or r#"…"#
            let mut j = i + 1;
            let mut hashes = 0;
            while chars.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if chars.get(j) != Some(&'"') {
                out.push(c);
                i += 1;
                continue;
            }
            j += 1;
            while j < chars.len() {
                if chars[j] == '"' && (0..hashes).all(|k| chars.get(j + 1 + k) == Some(&'#')) {
                    j += 1 + hashes;
                    break;
                }
                j += 1;
            }
            out.push_str("\"\"");
            i = j;
        } else if c == '"' {
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            out.push_str("\"\"");
            i += 1;
        } else if c == '\'' && char_literal_len(&chars, i).is_some() {
            out.push_str("' '");
            i += char_literal_len(&chars, i).unwrap_or(1);
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

fn prev_is_ident(chars: &[char], i: usize) -> bool {
    i > 0 && (chars[i - 1].is_alphanumeric() || chars[i - 1] == '_')
}

/// The length of a char literal at `i` ('a', '\n', '\u{1F600}'), or None for a lifetime.
fn char_literal_len(chars: &[char], i: usize) -> Option<usize> {
    match chars.get(i + 1)? {
        '\\' => (i + 2..chars.len().min(i + 12)).find(|&j| chars[j] == '\'').map(|j| j - i + 1),
        _ if chars.get(i + 2) == Some(&'\'') => Some(3),
        _ => None,
    }
}

/// The code with every `#[cfg(test)] mod name { … }` block removed.
fn without_test_modules(code: &str) -> String {
    let mut out = String::with_capacity(code.len());
    let mut rest = code;
    while let Some(at) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..at]);
        let after = &rest[at + "#[cfg(test)]".len()..];
        let trimmed = after.trim_start();
        let is_mod_block =
            trimmed.starts_with("mod ") && trimmed.find('{').is_some_and(|b| trimmed.find(';').is_none_or(|s| b < s));
        if !is_mod_block {
            rest = after;
            continue;
        }
        let open = after.find('{').unwrap_or(0);
        let mut depth = 0;
        let mut end = after.len();
        for (k, ch) in after[open..].char_indices() {
            match ch {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = open + k + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}
