//! promtool as the last word on the rendered Prometheus config, and its complaints pointed
//! back at the inputs a user can edit.
//!
//! The Prometheus tree is written to a private temporary directory and checked with
//! `promtool check config` (`--agent` in agent mode), exactly as Prometheus will read it,
//! rule files included. promtool only knows that temporary copy, which nobody will ever see:
//! "line 28" of it means nothing to a user. So [`explain`] (pure) names the scrape job and
//! the input file behind the complaint (the S3 key or local file, or the template when the
//! line is outside every input's job) and quotes the rendered lines around it.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use super::Error;
use crate::layout;
use crate::render::OutputFile;
use crate::secret;

/// How long promtool may take before validation fails.
const TIMEOUT: Duration = Duration::from_secs(20);

/// Lines quoted on each side of the line promtool names.
const CONTEXT: usize = 1;

/// Runs promtool on the Prometheus files of `files`; its complaint, explained, is the error.
pub async fn check(
    promtool: &Path,
    files: &[OutputFile],
    agent: bool,
    job_origins: &BTreeMap<String, String>,
) -> Result<(), Error> {
    let dir = tempfile::Builder::new()
        .prefix("moninit-check-")
        .tempdir()
        .map_err(|e| Error::Io {
            path: std::env::temp_dir().display().to_string(),
            source: e,
        })?;
    let io = |path: &Path, e| Error::Io {
        path: path.display().to_string(),
        source: e,
    };
    for file in files
        .iter()
        .filter(|f| f.path.starts_with(layout::PROMETHEUS_DIR))
    {
        let dest = dir.path().join(&file.path);
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent).map_err(|e| io(parent, e))?;
        }
        super::atomic::write_private(&dest, &file.contents).map_err(|e| io(&dest, e))?;
    }
    let config = dir.path().join(layout::PROMETHEUS_YML);
    let mut cmd = tokio::process::Command::new(promtool);
    cmd.arg("check").arg("config");
    if agent {
        cmd.arg("--agent");
    }
    cmd.arg(&config)
        .kill_on_drop(true)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = cmd
        .spawn()
        .map_err(|e| Error::Promtool(format!("running {}: {e}", promtool.display())))?;
    let _tracked = crate::supervise::reaper::track(child.id());
    let output = tokio::time::timeout(TIMEOUT, child.wait_with_output())
        .await
        .map_err(|_| {
            Error::Promtool(format!(
                "promtool did not finish within {} s",
                TIMEOUT.as_secs()
            ))
        })?
        .map_err(|e| Error::Promtool(format!("running {}: {e}", promtool.display())))?;
    if output.status.success() {
        tracing::debug!("promtool check config passed");
        return Ok(());
    }
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    // Show the paths as the user knows them, not the temporary copy.
    let text = text.replace(&format!("{}/", dir.path().display()), "");
    let detail: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("Checking "))
        .collect();
    let detail = detail.join("; ");
    // A rule file's complaint names the rule file: its lines are not prometheus.yml's.
    let rule_file = files.iter().find(|f| {
        f.path.starts_with(layout::PROMETHEUS_DIR)
            && f.path != Path::new(layout::PROMETHEUS_YML)
            && detail.contains(&*f.path.to_string_lossy())
    });
    let rendered = files
        .iter()
        .find(|f| f.path == Path::new(layout::PROMETHEUS_YML));
    let explained = match (rule_file, rendered) {
        (Some(rule), _) => format!(
            "{detail}\n  in the rule file {} from {}",
            rule.path.display(),
            rule.origin
        ),
        (None, Some(f)) => explain(
            &detail,
            &String::from_utf8_lossy(&f.contents),
            &f.origin,
            job_origins,
        ),
        (None, None) => detail,
    };
    Err(Error::Promtool(secret::mask(&format!(
        "promtool check config{} rejected {}: {explained}",
        if agent { " --agent" } else { "" },
        layout::PROMETHEUS_YML,
    ))))
}

/// `message` (promtool's words) followed by what a user needs to find the cause: the job and
/// the input file it came from (else the template), and the rendered lines promtool means.
pub fn explain(
    message: &str,
    rendered: &str,
    template_origin: &str,
    job_origins: &BTreeMap<String, String>,
) -> String {
    let lines: Vec<&str> = rendered.lines().collect();
    let line = line_number(message).filter(|n| *n >= 1 && *n <= lines.len());
    let job = quoted_job(message).or_else(|| line.and_then(|n| job_at(&lines, n)));
    let mut out = message.to_owned();
    match job.as_deref().map(|j| (j, job_origins.get(j))) {
        Some((job, Some(origin))) => {
            out.push_str(&format!("\n  in scrape job `{job}` from {origin}"))
        }
        Some((job, None)) => out.push_str(&format!(
            "\n  in scrape job `{job}`, written by the template {template_origin}"
        )),
        None => out.push_str(&format!(
            "\n  in the part of prometheus.yml written by the template {template_origin}"
        )),
    }
    if let Some(n) = line {
        out.push_str(&format!("\n  rendered {}:", layout::PROMETHEUS_YML));
        let first = n.saturating_sub(CONTEXT).max(1);
        let last = (n + CONTEXT).min(lines.len());
        for i in first..=last {
            let marker = if i == n { ">" } else { " " };
            out.push_str(&format!("\n  {marker} {i:>4} | {}", lines[i - 1]));
        }
    }
    out
}

/// The first `line N` in promtool's message (Go's YAML errors say `yaml: line 8: …`).
fn line_number(message: &str) -> Option<usize> {
    message.match_indices("line ").find_map(|(at, word)| {
        let digits: String = message[at + word.len()..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        digits.parse().ok()
    })
}

/// `… for scrape config with job name "x"`: Prometheus names the job itself.
fn quoted_job(message: &str) -> Option<String> {
    let rest = message.split("job name \"").nth(1)?;
    Some(rest.split('"').next()?.to_owned())
}

/// The scrape job whose entry holds line `n` (1-based) of the rendered file, found by
/// walking up to the nearest `- job_name:` inside `scrape_configs:`.
fn job_at(lines: &[&str], n: usize) -> Option<String> {
    for text in lines[..n].iter().rev() {
        let trimmed = text.trim_start();
        if let Some(name) = trimmed.strip_prefix("- job_name:") {
            return Some(name.trim().trim_matches(['"', '\'']).to_owned());
        }
        // A top-level key (scrape_configs: itself, or anything before it) ends the search.
        if !text.is_empty() && !text.starts_with([' ', '-', '#']) {
            return None;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const RENDERED: &str = "global:\n  scrape_interval: 30s\nscrape_configs:\n  - job_name: moninit\n    static_configs:\n      - targets: [\"127.0.0.1:8006\"]\n  - job_name: bad\n    bogus_key: 1\n    static_configs:\n    - targets:\n      - a:1\nremote_write:\n  - url: http://x\n";

    fn origins() -> BTreeMap<String, String> {
        BTreeMap::from([(
            "bad".into(),
            "s3://b/p/prometheus/scrape_configs/bad.yml".into(),
        )])
    }

    #[test]
    fn a_line_inside_a_job_names_the_job_its_input_and_quotes_the_line() {
        let text = explain(
            "yaml: unmarshal errors:; line 8: field bogus_key not found in type config.ScrapeConfig",
            RENDERED,
            "built-in template prometheus.yml",
            &origins(),
        );
        assert!(
            text.contains("in scrape job `bad` from s3://b/p/prometheus/scrape_configs/bad.yml"),
            "{text}"
        );
        assert!(text.contains(">    8 |     bogus_key: 1"), "{text}");
        assert!(text.contains("     7 |   - job_name: bad"), "{text}");
    }

    #[test]
    fn a_job_promtool_names_is_traced_without_a_line() {
        let text = explain(
            "scrape timeout greater than scrape interval for scrape config with job name \"bad\"",
            RENDERED,
            "t",
            &origins(),
        );
        assert!(
            text.contains("from s3://b/p/prometheus/scrape_configs/bad.yml"),
            "{text}"
        );
        assert!(!text.contains(" | "), "{text}");
    }

    #[test]
    fn a_line_outside_every_job_names_the_template() {
        let text = explain(
            "yaml: line 2: did not find expected key",
            RENDERED,
            "s3://b/p/templates/prometheus.yml.tera",
            &origins(),
        );
        assert!(
            text.contains("written by the template s3://b/p/templates/prometheus.yml.tera"),
            "{text}"
        );
        assert!(text.contains(">    2 |   scrape_interval: 30s"), "{text}");
    }

    #[test]
    fn the_built_in_job_belongs_to_the_template_and_wild_lines_are_ignored() {
        let text = explain("line 5: x", RENDERED, "tmpl", &origins());
        assert!(
            text.contains("in scrape job `moninit`, written by the template tmpl"),
            "{text}"
        );
        let text = explain("line 999: x", RENDERED, "tmpl", &origins());
        assert!(!text.contains(" | "), "{text}");
    }
}
