//! Typed mirrors of Grafana's provisioning structures (apiVersion 1), used to check rendered
//! files before Grafana sees them.
//!
//! Grafana itself ignores unknown keys, so a typo (`isdefault`, `jsonDate`) silently does
//! nothing; these mirrors reject unknown keys so the typo is caught at render time. Field
//! lists follow Grafana's `pkg/services/provisioning/datasources/types.go` and
//! `pkg/services/provisioning/dashboards/types.go`.

#![allow(dead_code)] // fields exist to be checked by serde, not read

use serde::Deserialize;

/// A datasource provisioning file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Datasources {
    pub api_version: i64,
    #[serde(default)]
    pub datasources: Vec<Datasource>,
    #[serde(default)]
    pub delete_datasources: Vec<DeleteDatasource>,
    #[serde(default)]
    pub prune: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Datasource {
    pub org_id: Option<i64>,
    pub org_name: Option<String>,
    pub version: Option<i64>,
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub access: Option<String>,
    pub url: Option<String>,
    pub user: Option<String>,
    pub database: Option<String>,
    pub basic_auth: Option<bool>,
    pub basic_auth_user: Option<String>,
    pub with_credentials: Option<bool>,
    pub is_default: Option<bool>,
    pub correlations: Option<serde_json::Value>,
    pub json_data: Option<serde_json::Map<String, serde_json::Value>>,
    pub secure_json_data: Option<serde_json::Map<String, serde_json::Value>>,
    pub editable: Option<bool>,
    pub uid: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DeleteDatasource {
    pub org_id: Option<i64>,
    pub org_name: Option<String>,
    pub name: String,
}

/// A dashboard provider provisioning file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DashboardProviders {
    pub api_version: i64,
    #[serde(default)]
    pub providers: Vec<DashboardProvider>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DashboardProvider {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub org_id: Option<i64>,
    pub folder: Option<String>,
    pub folder_uid: Option<String>,
    pub editable: Option<bool>,
    pub options: FileOptions,
    pub disable_deletion: Option<bool>,
    pub update_interval_seconds: Option<i64>,
    pub allow_ui_updates: Option<bool>,
}

/// `options` of the file provider.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FileOptions {
    pub path: String,
    #[serde(default)]
    pub folders_from_files_structure: bool,
}

/// Semantic checks Grafana would fail on at start-up (or silently mishandle).
pub fn check_datasources(d: &Datasources) -> Result<(), String> {
    if d.api_version != 1 {
        return Err(format!("apiVersion must be 1, not {}", d.api_version));
    }
    let defaults = d
        .datasources
        .iter()
        .filter(|x| x.is_default == Some(true))
        .count();
    if defaults > 1 {
        return Err("more than one datasource has isDefault: true".into());
    }
    let mut names = std::collections::BTreeSet::new();
    for ds in &d.datasources {
        if ds.name.is_empty() || !names.insert(&ds.name) {
            return Err(format!(
                "datasource name `{}` is empty or not unique",
                ds.name
            ));
        }
        if let Some(uid) = &ds.uid {
            if uid.len() > 40 {
                return Err(format!(
                    "datasource `{}`: uid longer than 40 characters",
                    ds.name
                ));
            }
        }
        if let Some(access) = &ds.access {
            if access != "proxy" && access != "direct" {
                return Err(format!(
                    "datasource `{}`: access must be proxy or direct",
                    ds.name
                ));
            }
        }
    }
    Ok(())
}

pub fn check_dashboard_providers(d: &DashboardProviders) -> Result<(), String> {
    if d.api_version != 1 {
        return Err(format!("apiVersion must be 1, not {}", d.api_version));
    }
    let mut names = std::collections::BTreeSet::new();
    for p in &d.providers {
        if !names.insert(&p.name) {
            return Err(format!(
                "dashboard provider name `{}` is not unique",
                p.name
            ));
        }
        if p.kind.as_deref().is_some_and(|k| k != "file") {
            return Err(format!(
                "provider `{}`: only the `file` type is supported",
                p.name
            ));
        }
        if p.options.folders_from_files_structure && (p.folder.is_some() || p.folder_uid.is_some())
        {
            return Err(format!(
                "provider `{}`: foldersFromFilesStructure needs `folder` and `folderUid` unset",
                p.name
            ));
        }
    }
    Ok(())
}
