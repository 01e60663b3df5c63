//! Man pages and shell completions of deployd, deployctl and deploy-agent, generated from their clap commands, so the packages ship docs that cannot drift from the flags.
//!
//! Each binary answers a hidden `generate-docs --out DIR` (dispatched on its first
//! argument, before its own parser, like deployd's local subcommands) by calling
//! [`main`] with its clap command. `DIR` then holds the layout of `/usr/share`'s
//! documentation folders, so a packager copies it as it is:
//!
//! ```text
//! man/man1/<bin>.1, <bin>-<subcommand>.1, …        (roff, not compressed)
//! bash-completion/completions/<bin>
//! zsh/vendor-completions/_<bin>
//! fish/vendor_completions.d/<bin>.fish
//! ```
//!
//! Pages carry no date (the version line names the commit), so the same commit
//! gives the same bytes.

mod errors;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Command, Parser};
use clap_complete::Shell;

pub use crate::errors::DocsError;

/// The first argument that selects the hidden docs generator.
pub const SUBCOMMAND: &str = "generate-docs";

/// `<bin> generate-docs`: write man pages and shell completions (for packagers).
#[derive(Debug, Parser)]
#[command(name = "generate-docs")]
struct GenerateDocsArgs {
    /// Directory to write into (created when missing; files in it are replaced).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
}

/// The folder of each shell's completion file under `DIR`, and its file name.
const COMPLETIONS: [(Shell, &str, &str, &str); 3] = [
    (Shell::Bash, "bash-completion/completions", "", ""),
    (Shell::Zsh, "zsh/vendor-completions", "_", ""),
    (Shell::Fish, "fish/vendor_completions.d", "", ".fish"),
];

/// Writes the pages of `command` and of its visible subcommands, one page for each
/// of `extra` (subcommands parsed outside `command`, such as `deployd backup`,
/// named `<bin>-<sub>`, with `command`'s version and listed under SEE ALSO on its
/// page), and bash, zsh and fish completions of `command` and the `extra`
/// subcommands under `out`. Returns the files written, sorted.
pub fn generate(
    command: Command,
    extra: Vec<Command>,
    out: &Path,
) -> Result<Vec<PathBuf>, DocsError> {
    if out.exists() && !out.is_dir() {
        return Err(DocsError::NotADirectory {
            path: out.to_path_buf(),
        });
    }
    let bin = command.get_name().to_owned();
    let man = out.join("man/man1");
    create_dir(&man, "man pages")?;
    let mut written = Vec::new();
    // As clap_mangen::generate_to, keeping the paths: built first, so each
    // subcommand's display name is `<bin>-<sub>`; no page for `help`.
    // `deployd backup` is parsed as its own command named with a space; its page
    // is `deployd-backup.1`, like a subcommand's.
    let extra_pages: Vec<String> = extra
        .iter()
        .map(|page| page.get_name().replace(' ', "-"))
        .collect();
    let mut pages = command.clone().disable_help_subcommand(true);
    pages.build();
    man_pages(pages, &man, &extra_pages, &mut written)?;
    // The extra pages' title line names the binary's version, as the others' do.
    let source = match command.get_version() {
        Some(version) => format!("{bin} {version}"),
        None => bin.clone(),
    };
    let mut completed = command.clone();
    for (page, name) in extra.into_iter().zip(&extra_pages) {
        let man_page_of = clap_mangen::Man::new(page.clone().display_name(name)).source(&source);
        write_page(man_page_of, name, &[], &man, &mut written)?;
        // Completions offer `deployd backup …` as if it were a subcommand.
        let sub = name
            .strip_prefix(&format!("{bin}-"))
            .unwrap_or(name)
            .to_owned();
        completed = completed.subcommand(page.name(sub));
    }
    for (shell, folder, prefix, suffix) in COMPLETIONS {
        let dir = out.join(folder);
        create_dir(&dir, "completions")?;
        let mut script = Vec::new();
        clap_complete::generate(shell, &mut completed.clone(), &bin, &mut script);
        let file = dir.join(format!("{prefix}{bin}{suffix}"));
        std::fs::write(&file, script).map_err(|source| DocsError::Write {
            what: format!("the {shell} completion of `{bin}`"),
            dir: dir.clone(),
            source,
        })?;
        written.push(file);
    }
    written.sort();
    Ok(written)
}

/// The page of `command` (its SEE ALSO naming `see_also`) and, first, of each of
/// its visible subcommands.
fn man_pages(
    command: Command,
    dir: &Path,
    see_also: &[String],
    written: &mut Vec<PathBuf>,
) -> Result<(), DocsError> {
    for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
        man_pages(sub.clone(), dir, &[], written)?;
    }
    let name = command
        .get_display_name()
        .unwrap_or_else(|| command.get_name())
        .to_owned();
    write_page(
        clap_mangen::Man::new(command),
        &name,
        see_also,
        dir,
        written,
    )
}

/// Writes `page` as `<name>.1` in `dir`, with a SEE ALSO section naming the pages
/// `see_also` (section 1) when there are any.
fn write_page(
    page: clap_mangen::Man,
    name: &str,
    see_also: &[String],
    dir: &Path,
    written: &mut Vec<PathBuf>,
) -> Result<(), DocsError> {
    let failed = |source| DocsError::Write {
        what: format!("the man page of `{name}`"),
        dir: dir.to_path_buf(),
        source,
    };
    let mut roff = Vec::new();
    page.render(&mut roff).map_err(failed)?;
    if !see_also.is_empty() {
        roff.extend_from_slice(b".SH \"SEE ALSO\"\n");
        let refs: Vec<String> = see_also
            .iter()
            .map(|p| format!(".BR {} (1)", p.replace('-', "\\-")))
            .collect();
        roff.extend_from_slice(refs.join(",\n").as_bytes());
        roff.push(b'\n');
    }
    let path = dir.join(format!("{name}.1"));
    std::fs::write(&path, roff).map_err(failed)?;
    written.push(path);
    Ok(())
}

/// What a binary's `main` calls first: `Some(exit code)` when its first argument
/// (after the program) is `generate-docs`, once the docs of what `commands` returns
/// (its clap command and the extra pages, see [`generate`]) are written; `None`
/// otherwise (without calling `commands`), and the binary parses its arguments.
pub fn dispatch(commands: impl FnOnce() -> (Command, Vec<Command>)) -> Option<ExitCode> {
    dispatch_from(std::env::args_os().skip(1), commands)
}

/// [`dispatch`] on `args` (the arguments after the program).
fn dispatch_from(
    args: impl IntoIterator<Item = OsString>,
    commands: impl FnOnce() -> (Command, Vec<Command>),
) -> Option<ExitCode> {
    let mut args = args.into_iter().peekable();
    if args.peek().is_none_or(|first| first != SUBCOMMAND) {
        return None;
    }
    let (command, extra) = commands();
    Some(main(args, command, extra))
}

/// `<bin> generate-docs --out DIR` (`args` starts with `generate-docs`): 0 written, 2
/// usage error, 1 a file could not be written; errors are printed after the binary's name.
pub fn main(
    args: impl IntoIterator<Item = OsString>,
    command: Command,
    extra: Vec<Command>,
) -> ExitCode {
    let bin = command.get_name().to_owned();
    let args = match GenerateDocsArgs::try_parse_from(args) {
        Ok(a) => a,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    match generate(command, extra, &args.out) {
        Ok(files) => {
            eprintln!(
                "{bin}: wrote {} files under `{}`",
                files.len(),
                args.out.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{bin}: {e}");
            ExitCode::FAILURE
        }
    }
}

fn create_dir(dir: &Path, what: &str) -> Result<(), DocsError> {
    std::fs::create_dir_all(dir).map_err(|source| DocsError::Write {
        what: what.to_owned(),
        dir: dir.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests;
