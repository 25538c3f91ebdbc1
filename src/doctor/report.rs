//! What doctor found, for people (✓/✗ lines with the evidence and the fix) and for machines
//! (`--json`), and the policy snippet a missing permission's fix carries (pure).
//!
//! Every line goes through the secret registry on its way out: no check puts a value in its
//! evidence, and this is the second lock.

use serde::Serialize;

/// A check's verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    /// Works, but something deserves attention (a clock a minute off, an old build).
    Warn,
    Fail,
    /// Not applicable here (IMDS disabled, no autoscaling group, sync off).
    Skip,
}

/// One check.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Check {
    /// What was checked: `credentials`, `s3://bucket/prefix/`, `amp remote_write`, …
    pub check: String,
    pub status: Status,
    /// What was seen.
    pub evidence: String,
    /// For a failure or a warning: exactly what to change.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Check {
    pub fn new(check: impl Into<String>, status: Status, evidence: impl Into<String>) -> Self {
        Check {
            check: check.into(),
            status,
            evidence: evidence.into(),
            fix: None,
        }
    }

    pub fn pass(check: impl Into<String>, evidence: impl Into<String>) -> Self {
        Check::new(check, Status::Pass, evidence)
    }

    pub fn skip(check: impl Into<String>, evidence: impl Into<String>) -> Self {
        Check::new(check, Status::Skip, evidence)
    }

    pub fn fail(
        check: impl Into<String>,
        evidence: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Check::new(check, Status::Fail, evidence).with_fix(fix)
    }

    pub fn warn(
        check: impl Into<String>,
        evidence: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Check::new(check, Status::Warn, evidence).with_fix(fix)
    }

    fn with_fix(self, fix: impl Into<String>) -> Self {
        Check {
            fix: Some(fix.into()),
            ..self
        }
    }
}

/// The fix for a permission the caller lacks: the action, and a statement granting it.
pub fn grant(action: &str, resource: &str) -> String {
    grant_when(action, resource, None)
}

/// [`grant`], the statement limited by `condition` (an IAM `Condition` block).
pub fn grant_when(action: &str, resource: &str, condition: Option<serde_json::Value>) -> String {
    let mut statement = serde_json::json!({
        "Effect": "Allow",
        "Action": action,
        "Resource": resource,
    });
    if let Some(condition) = condition {
        statement["Condition"] = condition;
    }
    format!(
        "the role needs `{action}` on {resource}; add to its policy:\n{}",
        serde_json::to_string_pretty(&statement).unwrap_or_default()
    )
}

/// Every check, in the order they ran.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    pub config: String,
    pub checks: Vec<Check>,
}

impl Report {
    /// Whether every check passed (warnings and skips included).
    pub fn ok(&self) -> bool {
        self.checks.iter().all(|c| c.status != Status::Fail)
    }

    pub fn count(&self, status: Status) -> usize {
        self.checks.iter().filter(|c| c.status == status).count()
    }

    pub fn push(&mut self, check: Check) {
        self.checks.push(check);
    }

    /// The report for people.
    pub fn text(&self) -> String {
        let mut out = format!("moninit doctor: {}\n", self.config);
        for c in &self.checks {
            let mark = match c.status {
                Status::Pass => "✓",
                Status::Warn => "!",
                Status::Fail => "✗",
                Status::Skip => "-",
            };
            out.push_str(&format!("{mark} {}: {}\n", c.check, c.evidence));
            if let Some(fix) = &c.fix {
                let mut lines = fix.lines();
                if let Some(first) = lines.next() {
                    out.push_str(&format!("    fix: {first}\n"));
                }
                for line in lines {
                    out.push_str(&format!("      {line}\n"));
                }
            }
        }
        out.push_str(&format!(
            "{} passed, {} warnings, {} failed, {} skipped\n",
            self.count(Status::Pass),
            self.count(Status::Warn),
            self.count(Status::Fail),
            self.count(Status::Skip)
        ));
        crate::secret::mask(&out)
    }

    /// The report for machines.
    pub fn json(&self) -> String {
        let mut value = serde_json::to_value(self).unwrap_or_default();
        if let Some(obj) = value.as_object_mut() {
            obj.insert("ok".into(), self.ok().into());
        }
        let mut text = serde_json::to_string_pretty(&value).unwrap_or_default();
        text.push('\n');
        crate::secret::mask(&text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_passes_only_without_failures_and_shows_each_fix() {
        let mut r = Report {
            config: "moninit.yaml".into(),
            ..Default::default()
        };
        r.push(Check::pass("credentials", "Environment"));
        r.push(Check::warn("clock", "90 s ahead", "synchronise"));
        assert!(r.ok());
        r.push(Check::fail(
            "ssm:/p/",
            "denied",
            grant(
                "ssm:GetParametersByPath",
                "arn:aws:ssm:us-east-1:*:parameter/p/*",
            ),
        ));
        assert!(!r.ok());
        let text = r.text();
        assert!(text.contains("✓ credentials: Environment\n"), "{text}");
        assert!(
            text.contains("✗ ssm:/p/: denied\n    fix: the role needs `ssm:GetParametersByPath`"),
            "{text}"
        );
        assert!(
            text.contains("\"Action\": \"ssm:GetParametersByPath\""),
            "{text}"
        );
        assert!(
            text.ends_with("1 passed, 1 warnings, 1 failed, 0 skipped\n"),
            "{text}"
        );
        let json: serde_json::Value = serde_json::from_str(&r.json()).unwrap();
        assert_eq!(json["ok"], false);
        assert_eq!(json["checks"][2]["status"], "fail");
        assert!(json["checks"][0].get("fix").is_none());
    }
}
