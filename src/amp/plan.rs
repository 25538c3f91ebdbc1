//! What a sync would change (pure): what AMP holds beside what the inputs say, printed the
//! way `terraform plan` prints, so a pipeline's log shows a reviewer what will happen.
//!
//! Ownership decides everything that is not a create:
//! - a namespace tagged `managed-by=moninit` is moninit's: updated when its data differs (or
//!   its last change failed), deleted when no input file gives its name any more;
//! - any other namespace is left alone, and a rule file whose name it already has is a
//!   collision: an error before anything is sent, never an overwrite.

use std::collections::BTreeMap;
use std::fmt;

use super::desired::Desired;
use super::Error;

/// One namespace as AMP holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Existing {
    /// Tagged as moninit's.
    pub managed: bool,
    /// Its rule file; read only for the namespaces the inputs name.
    pub data: Option<Vec<u8>>,
    /// AMP's status code (`ACTIVE`, `CREATION_FAILED`, …).
    pub status: String,
}

/// What AMP holds in the workspace.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Current {
    pub namespaces: BTreeMap<String, Existing>,
    /// The Alertmanager definition's document and status, when there is one.
    pub alertmanager: Option<(Vec<u8>, String)>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Action {
    Create,
    Update,
    Delete,
}

/// What a change is made to.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Target {
    Namespace(String),
    Alertmanager,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Namespace(name) => write!(f, "rule groups namespace `{name}`"),
            Target::Alertmanager => f.write_str("alertmanager definition"),
        }
    }
}

/// One change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub action: Action,
    pub target: Target,
    /// The input file behind it (none for a delete).
    pub origin: Option<String>,
    /// Lines added and removed (updates), or why a delete or a retried update happens.
    pub detail: String,
}

/// Every change, in the order they are made, and what stays as it is.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub changes: Vec<Change>,
    pub unchanged: usize,
    /// Namespaces moninit did not create, left alone.
    pub foreign: Vec<String>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    pub fn count(&self, action: Action) -> usize {
        self.changes.iter().filter(|c| c.action == action).count()
    }
}

fn failed(status: &str) -> bool {
    status.ends_with("FAILED")
}

fn line_delta(old: &[u8], new: &[u8]) -> String {
    let (old, new) = (String::from_utf8_lossy(old), String::from_utf8_lossy(new));
    let diff = similar::TextDiff::from_lines(old.as_ref(), new.as_ref());
    let (mut added, mut removed) = (0, 0);
    for change in diff.iter_all_changes() {
        match change.tag() {
            similar::ChangeTag::Insert => added += 1,
            similar::ChangeTag::Delete => removed += 1,
            similar::ChangeTag::Equal => {}
        }
    }
    format!("+{added} −{removed} lines")
}

/// Compares; a collision with a namespace moninit does not own is an error naming the file.
pub fn plan(desired: &Desired, current: &Current) -> Result<Plan, Error> {
    let mut plan = Plan::default();
    for (name, ns) in &desired.namespaces {
        let target = Target::Namespace(name.clone());
        let origin = Some(ns.origin.clone());
        match current.namespaces.get(name) {
            None => plan.changes.push(Change {
                action: Action::Create,
                target,
                origin,
                detail: String::new(),
            }),
            Some(existing) if !existing.managed => {
                return Err(Error::Input {
                    origin: ns.origin.clone(),
                    message: format!(
                        "AMP already has a rule groups namespace `{name}` that moninit did not create \
                         (no `{}={}` tag); moninit never changes it: rename the file, or delete or tag \
                         that namespace",
                        super::MANAGED_TAG.0,
                        super::MANAGED_TAG.1
                    ),
                });
            }
            Some(existing) if failed(&existing.status) => plan.changes.push(Change {
                action: Action::Update,
                target,
                origin,
                detail: format!("its last change is {} in AMP; sent again", existing.status),
            }),
            Some(existing) if existing.data.as_deref() != Some(ns.data.as_slice()) => {
                plan.changes.push(Change {
                    action: Action::Update,
                    target,
                    origin,
                    detail: line_delta(existing.data.as_deref().unwrap_or_default(), &ns.data),
                })
            }
            Some(_) => plan.unchanged += 1,
        }
    }
    for (name, existing) in &current.namespaces {
        if desired.namespaces.contains_key(name) {
            continue;
        }
        if existing.managed {
            plan.changes.push(Change {
                action: Action::Delete,
                target: Target::Namespace(name.clone()),
                origin: None,
                detail: "created by moninit, no longer in the inputs".into(),
            });
        } else {
            plan.foreign.push(name.clone());
        }
    }
    if let Some(definition) = &desired.alertmanager {
        let origin = Some(definition.origin.clone());
        match &current.alertmanager {
            None => plan.changes.push(Change {
                action: Action::Create,
                target: Target::Alertmanager,
                origin,
                detail: String::new(),
            }),
            Some((_, status)) if failed(status) => plan.changes.push(Change {
                action: Action::Update,
                target: Target::Alertmanager,
                origin,
                detail: format!("its last change is {status} in AMP; sent again"),
            }),
            Some((data, _)) if *data != definition.data => plan.changes.push(Change {
                action: Action::Update,
                target: Target::Alertmanager,
                origin,
                detail: line_delta(data, &definition.data),
            }),
            Some(_) => plan.unchanged += 1,
        }
    }
    plan.changes
        .sort_by(|a, b| (a.action, &a.target).cmp(&(b.action, &b.target)));
    Ok(plan)
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for change in &self.changes {
            let sign = match change.action {
                Action::Create => "+ create",
                Action::Update => "~ update",
                Action::Delete => "- delete",
            };
            write!(f, "  {sign} {}", change.target)?;
            if let Some(origin) = &change.origin {
                write!(f, " from {origin}")?;
            }
            if !change.detail.is_empty() {
                write!(f, " ({})", change.detail)?;
            }
            writeln!(f)?;
        }
        write!(
            f,
            "Plan: {} to create, {} to update, {} to delete, {} unchanged.",
            self.count(Action::Create),
            self.count(Action::Update),
            self.count(Action::Delete),
            self.unchanged
        )?;
        if !self.foreign.is_empty() {
            write!(
                f,
                "\nLeft alone (not created by moninit): {}.",
                self.foreign.join(", ")
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::desired::{Definition, Namespace};
    use super::*;

    fn desired(names: &[(&str, &str)]) -> Desired {
        Desired {
            namespaces: names
                .iter()
                .map(|(n, d)| {
                    (
                        (*n).to_owned(),
                        Namespace {
                            name: (*n).to_owned(),
                            origin: format!("rules/{n}.yml"),
                            data: d.as_bytes().to_vec(),
                        },
                    )
                })
                .collect(),
            alertmanager: None,
        }
    }

    fn existing(managed: bool, data: &str, status: &str) -> Existing {
        Existing {
            managed,
            data: Some(data.as_bytes().to_vec()),
            status: status.into(),
        }
    }

    #[test]
    fn creates_updates_and_deletes_only_what_differs() {
        let mut current = Current::default();
        current
            .namespaces
            .insert("same".into(), existing(true, "a\n", "ACTIVE"));
        current
            .namespaces
            .insert("changed".into(), existing(true, "a\nb\n", "ACTIVE"));
        current
            .namespaces
            .insert("gone".into(), existing(true, "x\n", "ACTIVE"));
        current
            .namespaces
            .insert("theirs".into(), existing(false, "x\n", "ACTIVE"));
        let want = desired(&[("same", "a\n"), ("changed", "a\nc\nd\n"), ("new", "n\n")]);
        let plan = plan(&want, &current).unwrap();
        let summary: Vec<_> = plan
            .changes
            .iter()
            .map(|c| (c.action, c.target.to_string()))
            .collect();
        assert_eq!(
            summary,
            vec![
                (Action::Create, "rule groups namespace `new`".into()),
                (Action::Update, "rule groups namespace `changed`".into()),
                (Action::Delete, "rule groups namespace `gone`".into()),
            ]
        );
        assert_eq!(plan.unchanged, 1);
        assert_eq!(plan.foreign, vec!["theirs".to_owned()]);
        let text = plan.to_string();
        assert!(
            text.contains(
                "~ update rule groups namespace `changed` from rules/changed.yml (+2 −1 lines)"
            ),
            "{text}"
        );
        assert!(
            text.contains("Plan: 1 to create, 1 to update, 1 to delete, 1 unchanged."),
            "{text}"
        );
        assert!(
            text.contains("Left alone (not created by moninit): theirs."),
            "{text}"
        );
    }

    #[test]
    fn nothing_to_do_when_amp_holds_the_inputs() {
        let mut current = Current::default();
        current
            .namespaces
            .insert("a".into(), existing(true, "a\n", "ACTIVE"));
        let plan = plan(&desired(&[("a", "a\n")]), &current).unwrap();
        assert!(plan.is_empty());
        assert_eq!(
            plan.to_string(),
            "Plan: 0 to create, 0 to update, 0 to delete, 1 unchanged."
        );
    }

    #[test]
    fn a_foreign_namespace_of_the_same_name_is_a_collision_not_a_target() {
        let mut current = Current::default();
        current
            .namespaces
            .insert("a".into(), existing(false, "theirs\n", "ACTIVE"));
        let err = plan(&desired(&[("a", "mine\n")]), &current)
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("rules/a.yml: AMP already has"), "{err}");
    }

    #[test]
    fn a_failed_change_is_sent_again_even_with_the_same_data() {
        let mut current = Current::default();
        current
            .namespaces
            .insert("a".into(), existing(true, "a\n", "UPDATE_FAILED"));
        let plan = plan(&desired(&[("a", "a\n")]), &current).unwrap();
        assert_eq!(plan.changes[0].action, Action::Update);
    }

    #[test]
    fn the_alertmanager_definition_is_created_or_updated_never_deleted() {
        let mut want = desired(&[]);
        want.alertmanager = Some(Definition {
            origin: "am.yml".into(),
            config: String::new(),
            templates: Default::default(),
            data: b"alertmanager_config: x\n".to_vec(),
        });
        let created = plan(&want, &Current::default()).unwrap();
        assert_eq!(created.changes[0].action, Action::Create);
        let current = Current {
            alertmanager: Some((b"alertmanager_config: y\n".to_vec(), "ACTIVE".into())),
            ..Default::default()
        };
        assert_eq!(
            plan(&want, &current).unwrap().changes[0].action,
            Action::Update
        );
        let kept = plan(&desired(&[]), &current).unwrap();
        assert!(kept.is_empty());
    }
}
