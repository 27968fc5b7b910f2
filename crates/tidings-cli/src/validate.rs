//! `tidings validate [--update]`: the workspace rules (`tidings_core::catalog::validate`),
//! one line per problem, and the lock rewritten on `--update`.

use std::process::ExitCode;

use tidings_core::catalog::{self, Lock};

use crate::workspace::Workspace;
use crate::Failure;

pub(crate) fn run(ws: &Workspace, update: bool) -> Result<ExitCode, Failure> {
    let lock = ws.lock()?;
    let mut lines = Vec::new();
    if ws.manifest.is_none() {
        lines.push(
            "warning[no-manifest]: no tidings.toml, so declared subscriptions are not checked: add one with a [services.<name>] table per service (publishes, subscribes), or pass --manifest"
                .to_string(),
        );
    }
    if lock.is_none() && !update {
        lines.push(format!(
            "warning[no-lock]: no lock file at {}, so contract changes are not checked: run `tidings validate --update` and commit it",
            ws.lock_path.display()
        ));
    }
    // With --update, contract changes are judged against the lock being replaced.
    let problems = catalog::validate(&ws.catalogs, ws.manifest.as_ref(), lock.as_ref());
    let errors = problems.iter().filter(|p| p.is_error()).count();
    let warnings = problems.len() - errors + lines.len();
    lines.extend(problems.iter().map(ToString::to_string));
    for line in &lines {
        println!("{line}");
    }
    if update {
        let new = Lock::from_catalogs(&ws.catalogs);
        if lock.as_ref() != Some(&new) {
            std::fs::write(&ws.lock_path, new.to_json())
                .map_err(|e| format!("cannot write {}: {e}", ws.lock_path.display()))?;
            println!(
                "wrote {} ({} events)",
                ws.lock_path.display(),
                new.events.len()
            );
        } else {
            println!("{} is up to date", ws.lock_path.display());
        }
    }
    let services = ws.services().len();
    let events = catalog::Index::new(&ws.catalogs).names().len();
    println!(
        "{services} services, {events} events: {errors} {}, {warnings} {}",
        plural(errors, "error"),
        plural(warnings, "warning")
    );
    Ok(if errors > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        word.to_string()
    } else {
        format!("{word}s")
    }
}
