//! Tests of the docs generator on a small command with a visible, a hidden and an extra subcommand.

use std::path::Path;

use clap::{Arg, Command};

use super::*;

fn tool() -> Command {
    Command::new("tool")
        .version("1.2.3 (abc, 2026-01-01)")
        .about("A tool.")
        .arg(
            Arg::new("listen")
                .long("listen")
                .help("Address to listen on."),
        )
        .subcommand(Command::new("show").about("Show a thing."))
        .subcommand(Command::new("secret-docs").hide(true))
}

fn names(files: &[PathBuf], root: &Path) -> Vec<String> {
    files
        .iter()
        .map(|f| f.strip_prefix(root).unwrap().display().to_string())
        .collect()
}

#[test]
fn writes_pages_and_completions_in_the_usr_share_layout() {
    let dir = tempfile::tempdir().unwrap();
    // A file already there is left alone and not reported as written.
    std::fs::write(dir.path().join("notes.txt"), "mine").unwrap();
    let extra = Command::new("tool backup").about("Back it up.");
    let files = generate(tool(), vec![extra], dir.path()).unwrap();
    assert_eq!(
        names(&files, dir.path()),
        [
            "bash-completion/completions/tool",
            "fish/vendor_completions.d/tool.fish",
            "man/man1/tool-backup.1",
            "man/man1/tool-show.1",
            "man/man1/tool.1",
            "zsh/vendor-completions/_tool",
        ]
    );
    let page = std::fs::read_to_string(dir.path().join("man/man1/tool.1")).unwrap();
    assert!(page.contains(".TH tool 1"), "{page}");
    assert!(page.contains("listen"), "{page}");
    assert!(page.contains("1.2.3 (abc, 2026\\-01\\-01)"), "{page}");
    assert!(!page.contains("secret"), "hidden subcommand listed: {page}");
    // The extra page is named on the main page and carries the binary's version.
    assert!(
        page.contains(".SH \"SEE ALSO\"\n.BR tool\\-backup (1)"),
        "{page}"
    );
    let backup = std::fs::read_to_string(dir.path().join("man/man1/tool-backup.1")).unwrap();
    assert!(
        backup.contains(".TH tool-backup 1  \"tool 1.2.3 (abc, 2026-01-01)\""),
        "{backup}"
    );
    let bash =
        std::fs::read_to_string(dir.path().join("bash-completion/completions/tool")).unwrap();
    assert!(
        bash.contains("--listen") && bash.contains("show") && bash.contains("backup"),
        "{bash}"
    );
}

#[test]
fn the_same_command_gives_the_same_bytes() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let files_a = generate(tool(), vec![], a.path()).unwrap();
    generate(tool(), vec![], b.path()).unwrap();
    for file in files_a {
        let relative = file.strip_prefix(a.path()).unwrap();
        assert_eq!(
            std::fs::read(&file).unwrap(),
            std::fs::read(b.path().join(relative)).unwrap(),
            "{}",
            relative.display()
        );
    }
}

#[test]
fn an_out_path_that_is_a_file_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plain");
    std::fs::write(&file, "x").unwrap();
    let err = generate(tool(), vec![], &file).unwrap_err().to_string();
    assert!(
        err.contains(&file.display().to_string()) && err.contains("not a directory"),
        "{err}"
    );
}

#[test]
fn dispatch_runs_only_for_generate_docs_as_the_first_argument() {
    let dir = tempfile::tempdir().unwrap();
    let never = || -> (Command, Vec<Command>) { panic!("commands built without generate-docs") };
    assert!(dispatch_from(["--listen".into(), SUBCOMMAND.into()], never).is_none());
    assert!(dispatch_from(Vec::<OsString>::new(), never).is_none());
    let out = dir.path().join("docs");
    let code = dispatch_from(
        [
            SUBCOMMAND.into(),
            "--out".into(),
            out.clone().into_os_string(),
        ],
        || (tool(), vec![]),
    );
    assert_eq!(code, Some(ExitCode::SUCCESS));
    assert!(out.join("man/man1/tool.1").is_file());
    // A usage error of generate-docs is exit 2, as the binaries' own.
    let code = dispatch_from([SUBCOMMAND.into(), "--bogus".into()], || (tool(), vec![]));
    assert_eq!(code, Some(ExitCode::from(2)));
}
