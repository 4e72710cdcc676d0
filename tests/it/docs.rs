//! The documents hold only what pastes and what exists: every relative link
//! resolves, every path of the repository a document names exists, and every
//! line of a `sh` or `bash` block that runs the binary parses with the real
//! command line. A command that does not paste fails the build here.

use std::path::{Path, PathBuf};

use catalogue::config::Cli;
use clap::Parser;

use crate::helpers::repo_path;

/// Where the documents are: the front door, the code map, and `docs/`,
/// `scripts/` and `deploy/k8s/` behind them.
fn documents() -> Vec<PathBuf> {
    let mut documents = vec![repo_path("README.md"), repo_path("ARCHITECTURE.md")];
    for dir in ["docs", "scripts", "deploy/k8s"] {
        let mut found: Vec<PathBuf> = std::fs::read_dir(repo_path(dir))
            .unwrap_or_else(|error| panic!("{dir}: {error}"))
            .map(|entry| entry.unwrap().path())
            .filter(|path| path.extension().is_some_and(|ext| ext == "md"))
            .collect();
        found.sort();
        documents.extend(found);
    }
    documents
}

/// What is wrong with one document, one line per finding.
fn problems(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut problems = Vec::new();
    for target in link_targets(&text) {
        let file = target.split('#').next().unwrap_or_default();
        if !file.is_empty() && !path.parent().unwrap().join(file).exists() {
            problems.push(format!("link to {target}: no such file"));
        }
    }
    let foreign = FOREIGN_PATHS
        .iter()
        .any(|document| path.ends_with(document));
    let ours = |named: &String| !(foreign && named.starts_with("src/"));
    for named in repository_paths(&text).into_iter().filter(ours) {
        if !repo_path(&named).exists() {
            problems.push(format!("`{named}`: no such file or directory"));
        }
    }
    for (line_number, line) in shell_lines(&text) {
        if let Some(problem) = shell_line_problem(&line) {
            problems.push(format!("line {line_number}: {problem}: {line}"));
        }
    }
    problems
}

/// The targets of `[text](target)` links that point into the repository.
fn link_targets(text: &str) -> Vec<String> {
    text.match_indices("](")
        .filter_map(|(at, _)| {
            let rest = &text[at + 2..];
            let end = rest.find(')')?;
            Some(rest[..end].trim().to_owned())
        })
        .filter(|target| {
            !target.contains("://") && !target.starts_with("mailto:") && !target.starts_with('#')
        })
        .collect()
}

/// Documents whose `src/` paths are another repository's (tokio's, h2's);
/// their other paths are checked.
const FOREIGN_PATHS: &[&str] = &["docs/tokio-scheduler.md"];

/// The top-level folders a document names paths in.
const REPOSITORY_ROOTS: &[&str] = &[
    ".ci/",
    "benches/",
    "deploy/",
    "docs/",
    "fuzz/",
    "grafana/",
    "migrations/",
    "otel/",
    "proto/",
    "scripts/",
    "src/",
    "tests/",
    "vendor/",
];

/// Paths of the repository named in the text: in backticks or as words
/// of a command, beginning with one of its top-level folders. A path with a
/// wildcard or a placeholder is a pattern, not a name; `:LINE:COLUMN`
/// after a file is dropped.
fn repository_paths(text: &str) -> Vec<String> {
    text.split(|c: char| c.is_whitespace() || "`()[]\"'=,;|<>".contains(c))
        .map(|word| word.split('#').next().unwrap_or_default())
        .map(|word| word.trim_end_matches(['.', ':']))
        .filter(|word| REPOSITORY_ROOTS.iter().any(|root| word.starts_with(root)))
        .filter(|word| !word.contains(['*', '{', '$', '…', '?', '&']))
        .filter(|word| !word.contains("NAME") && !word.contains("PATH"))
        .map(|word| match word.split_once(':') {
            Some((file, _line)) => file.to_owned(),
            None => word.to_owned(),
        })
        .collect()
}

/// The lines of every fenced `sh` or `bash` block, numbered, with `\`
/// continuations joined.
fn shell_lines(text: &str) -> Vec<(usize, String)> {
    let mut lines = Vec::new();
    let mut in_shell = false;
    let mut in_other = false;
    let mut pending: Option<(usize, String)> = None;
    for (index, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        if let Some(info) = trimmed.strip_prefix("```") {
            if in_shell || in_other {
                in_shell = false;
                in_other = false;
            } else if matches!(info.trim(), "sh" | "bash" | "shell" | "console") {
                in_shell = true;
            } else {
                in_other = true;
            }
            continue;
        }
        if !in_shell {
            continue;
        }
        let (number, mut joined) = pending.take().unwrap_or((index + 1, String::new()));
        match trimmed.strip_suffix('\\') {
            Some(start) => {
                joined.push_str(start);
                pending = Some((number, joined));
            }
            None => {
                joined.push_str(trimmed);
                lines.push((number, joined));
            }
        }
    }
    lines
}

/// Why one shell line would not paste, if it would not.
fn shell_line_problem(line: &str) -> Option<String> {
    if line.contains('…') {
        return Some("an ellipsis is not a command".into());
    }
    let words = match shell_words(line) {
        Ok(words) => words,
        Err(error) => return Some(error),
    };
    let command = words.iter().take_while(|word| *word != "#");
    if command.clone().any(|word| word.contains("...")) {
        return Some("an ellipsis is not a command".into());
    }
    if words.iter().any(|word| word.starts_with("[--")) {
        return Some("an optional flag in brackets does not paste".into());
    }
    if words
        .iter()
        .any(|word| word.starts_with('<') && word.ends_with('>'))
    {
        return Some("a <placeholder> does not paste".into());
    }
    if words.first().is_some_and(|word| word == "catalogue") {
        return Some(
            "`catalogue` is not on PATH: target/release/catalogue or cargo run --release --".into(),
        );
    }
    let args = catalogue_arguments(&words)?;
    let argv = std::iter::once("catalogue".to_owned()).chain(args);
    match Cli::try_parse_from(argv) {
        Ok(_) => None,
        Err(error) if error.kind() == clap::error::ErrorKind::DisplayHelp => None,
        Err(error) if error.kind() == clap::error::ErrorKind::DisplayVersion => None,
        Err(error) => Some(format!("the CLI refuses it: {}", error.kind())),
    }
}

/// The arguments given to the binary, when the line runs it: after any
/// `VAR=value` assignments, `target/*/catalogue` or `cargo run
/// [--release] [-- ARGS]`. Words from an unquoted `#`, `|`, `&`, `>` or `;`
/// on are another command's or a comment.
fn catalogue_arguments(words: &[String]) -> Option<Vec<String>> {
    let mut words = words
        .iter()
        .skip_while(|word| word.contains('=') && !word.starts_with('-'))
        .take_while(|word| !matches!(word.as_str(), "#" | "|" | "&" | "&&" | ">" | ";" | "2>&1"))
        .cloned();
    let first = words.next()?;
    if first.ends_with("/release/catalogue") || first.ends_with("/debug/catalogue") {
        return Some(words.collect());
    }
    if first == "cargo" && words.next().as_deref() == Some("run") {
        let rest: Vec<String> = words.collect();
        return Some(match rest.iter().position(|word| word == "--") {
            Some(at) => rest[at + 1..].to_vec(),
            None => Vec::new(),
        });
    }
    None
}

/// Splits a line as a POSIX shell would split its words (quotes, escapes);
/// an unquoted `#` after a space starts a comment, kept as the word `#`.
fn shell_words(line: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => return Err("an unclosed ' quote".into()),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => word.extend(chars.next()),
                        Some(c) => word.push(c),
                        None => return Err("an unclosed \" quote".into()),
                    }
                }
            }
            '\\' => {
                in_word = true;
                word.extend(chars.next());
            }
            '#' if !in_word => {
                words.push("#".to_owned());
                return Ok(words);
            }
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

#[test]
fn every_link_path_and_command_in_the_documents_holds() {
    let findings: Vec<String> = documents()
        .iter()
        .flat_map(|path| {
            let name = path.strip_prefix(repo_path("")).unwrap_or(path).to_owned();
            problems(path)
                .into_iter()
                .map(move |problem| format!("{}: {problem}", name.display()))
        })
        .collect();

    assert!(findings.is_empty(), "{}", findings.join("\n"));
}

#[test]
fn every_document_in_docs_starts_with_what_its_reader_will_learn() {
    let mut without: Vec<String> = std::fs::read_dir(repo_path("docs"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "md"))
        // The scheduler's guide opens with the Go model it maps from.
        .filter(|path| !path.ends_with("docs/tokio-scheduler.md"))
        .filter(|path| {
            let text = std::fs::read_to_string(path).unwrap();
            let opening: String = text.lines().take(4).collect::<Vec<_>>().join(" ");
            !opening.contains("What you will learn here")
        })
        .map(|path| path.display().to_string())
        .collect();
    without.sort();

    assert!(without.is_empty(), "no opening promise: {without:?}");
}

#[test]
fn scripts_readme_names_every_script() {
    let index = std::fs::read_to_string(repo_path("scripts/README.md")).unwrap();
    let mut missing: Vec<String> = std::fs::read_dir(repo_path("scripts"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".sh") || name.ends_with(".py") || name.ends_with(".toml"))
        .filter(|name| !index.contains(&format!("`{name}`")))
        .collect();
    missing.sort();

    assert!(
        missing.is_empty(),
        "scripts/README.md does not name {missing:?}"
    );
}

#[test]
fn the_check_finds_what_does_not_paste() {
    let bad = [
        "cargo run --release -- upstream --latency-ms 10 [--jitter-ms 50]",
        "catalogue load --rps 500 --no-such-flag",
        "target/release/catalogue serve --grpc-addr <ADDR>",
        "catalogue load --rps 200",
        "curl -X DELETE localhost:6060/faults …",
    ];
    let good = [
        "cargo run --release",
        "cargo run --release -- load --rps 500 --duration 60s   # open loop",
        "OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4317 target/release/catalogue --enable-faults",
        "curl -X PUT localhost:6060/faults -d '{\"latency_ms\": 50}'",
        "target/release/catalogue serve --help",
        "curl localhost:6060/debug/console  # {\"state\":\"dormant\",...}",
    ];

    for line in bad {
        assert!(shell_line_problem(line).is_some(), "not caught: {line}");
    }
    for line in good {
        assert_eq!(shell_line_problem(line), None, "{line}");
    }
    assert_eq!(
        link_targets("see [a](docs/x.md#y), [b](https://e.org) and [c](#z)"),
        ["docs/x.md#y"]
    );
    assert_eq!(
        repository_paths("`src/app.rs:260:14` and scripts/bench.sh, not `grafana/*.json`"),
        ["src/app.rs", "scripts/bench.sh"]
    );
}
