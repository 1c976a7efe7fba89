//! Roles and the role × endpoint table: the one source of truth used by the router's
//! authorization layer, by `docs/service.md` (checked by a test) and by the exhaustive tests.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A user's role.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Operates the service.
    Admin,
    /// Database B, templates and normative-database builds.
    Scientist,
    /// Database A cases of the network and deviation maps.
    Radiologist,
    /// Committee approval and diagnosis confirmation.
    Committee,
    /// Service account of the portal, acting for a named user who is recorded.
    Portal,
    /// Reads the audit log.
    Auditor,
}

impl Role {
    /// Every role, in table order.
    pub const ALL: [Role; 6] =
        [Role::Admin, Role::Scientist, Role::Radiologist, Role::Committee, Role::Portal, Role::Auditor];

    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Scientist => "scientist",
            Role::Radiologist => "radiologist",
            Role::Committee => "committee",
            Role::Portal => "portal",
            Role::Auditor => "auditor",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Role::ALL.into_iter().find(|role| role.as_str() == text).ok_or_else(|| {
            format!("unknown role `{text}` (expected one of admin, scientist, radiologist, committee, portal, auditor)")
        })
    }
}

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No token needed (health, version, the OpenAPI document).
    Public,
    /// A valid token of one of these roles.
    Roles(&'static [Role]),
}

/// One route of the API.
#[derive(Debug, Clone, Copy)]
pub struct RouteSpec {
    /// HTTP method in upper case.
    pub method: &'static str,
    /// Path template in axum/OpenAPI syntax (`/api/v1/cases/{id}`).
    pub path: &'static str,
    /// Short action name recorded in the audit log.
    pub action: &'static str,
    /// Who may call it.
    pub access: Access,
}

impl RouteSpec {
    /// Whether `role` may call this route.
    pub fn allows(&self, role: Role) -> bool {
        match self.access {
            Access::Public => true,
            Access::Roles(roles) => roles.contains(&role),
        }
    }
}

use Role::{Admin, Auditor, Committee, Portal, Radiologist, Scientist};

const EVERY_ROLE: &[Role] = &[Admin, Scientist, Radiologist, Committee, Portal, Auditor];
const STUDY_WRITERS: &[Role] = &[Admin, Scientist, Radiologist, Portal];
const STUDY_READERS: &[Role] = &[Admin, Scientist, Radiologist, Committee, Portal];
const CASE_WRITERS: &[Role] = &[Admin, Radiologist, Portal];
const CASE_READERS: &[Role] = &[Admin, Radiologist, Committee, Portal];
const COMMITTEE: &[Role] = &[Admin, Committee, Portal];
const JOB_USERS: &[Role] = &[Admin, Scientist, Radiologist, Portal];
const NORMDB_READERS: &[Role] = &[Admin, Scientist, Radiologist, Portal];
const BUILDERS: &[Role] = &[Admin, Scientist];
const AUDITORS: &[Role] = &[Auditor];
const OPERATORS: &[Role] = &[Admin, Auditor];
const ADMINS: &[Role] = &[Admin];

/// Every route of the API. The router is built from handlers registered under these paths,
/// and a test checks that router, OpenAPI document and this table agree.
pub const ROUTES: &[RouteSpec] = &[
    RouteSpec { method: "GET", path: "/health", action: "health", access: Access::Public },
    RouteSpec { method: "GET", path: "/version", action: "version", access: Access::Public },
    RouteSpec { method: "GET", path: "/openapi.json", action: "openapi", access: Access::Public },
    RouteSpec { method: "GET", path: "/ready", action: "ready", access: Access::Roles(EVERY_ROLE) },
    RouteSpec { method: "GET", path: "/metrics", action: "metrics", access: Access::Roles(OPERATORS) },
    RouteSpec { method: "GET", path: "/api/v1/whoami", action: "whoami", access: Access::Roles(EVERY_ROLE) },
    RouteSpec {
        method: "POST",
        path: "/api/v1/studies",
        action: "study.upload",
        access: Access::Roles(STUDY_WRITERS),
    },
    RouteSpec {
        method: "POST",
        path: "/api/v1/studies/import",
        action: "study.import",
        access: Access::Roles(STUDY_WRITERS),
    },
    RouteSpec {
        method: "GET",
        path: "/api/v1/studies",
        action: "study.list",
        access: Access::Roles(STUDY_READERS),
    },
    RouteSpec {
        method: "GET",
        path: "/api/v1/studies/{id}",
        action: "study.get",
        access: Access::Roles(STUDY_READERS),
    },
    RouteSpec {
        method: "POST",
        path: "/api/v1/studies/{id}/ingest",
        action: "study.ingest",
        access: Access::Roles(STUDY_WRITERS),
    },
    RouteSpec {
        method: "GET",
        path: "/api/v1/studies/{id}/consent",
        action: "consent.get",
        access: Access::Roles(STUDY_READERS),
    },
    RouteSpec {
        method: "POST",
        path: "/api/v1/studies/{id}/consent",
        action: "consent.record",
        access: Access::Roles(STUDY_WRITERS),
    },
    RouteSpec {
        method: "POST",
        path: "/api/v1/studies/{id}/consent/withdraw",
        action: "consent.withdraw",
        access: Access::Roles(STUDY_WRITERS),
    },
    RouteSpec {
        method: "POST",
        path: "/api/v1/cases",
        action: "case.submit",
        access: Access::Roles(CASE_WRITERS),
    },
    RouteSpec {
        method: "GET",
        path: "/api/v1/cases",
        action: "case.list",
        access: Access::Roles(CASE_READERS),
    },
    RouteSpec {
        method: "GET",
        path: "/api/v1/cases/{id}",
        action: "case.get",
        access: Access::Roles(CASE_READERS),
    },
    RouteSpec {
        method: "PATCH",
        path: "/api/v1/cases/{id}",
        action: "case.update",
        access: Access::Roles(CASE_WRITERS),
    },
    RouteSpec {
        method: "POST",
        path: "/api/v1/cases/{id}/review",
        action: "case.review",
        access: Access::Roles(COMMITTEE),
    },
    RouteSpec {
        method: "POST",
        path: "/api/v1/cases/{id}/approvals",
        action: "case.approve",
        access: Access::Roles(COMMITTEE),
    },
    RouteSpec {
        method: "POST",
        path: "/api/v1/cases/{id}/confirmations",
        action: "case.confirm",
        access: Access::Roles(COMMITTEE),
    },
    RouteSpec {
        method: "POST",
        path: "/api/v1/cases/{id}/reject",
        action: "case.reject",
        access: Access::Roles(COMMITTEE),
    },
    RouteSpec {
        method: "POST",
        path: "/api/v1/cases/{id}/withdraw",
        action: "case.withdraw",
        access: Access::Roles(CASE_WRITERS),
    },
    RouteSpec {
        method: "POST",
        path: "/api/v1/cases/{id}/deviation",
        action: "case.deviation",
        access: Access::Roles(CASE_WRITERS),
    },
    RouteSpec {
        method: "GET",
        path: "/api/v1/cases/{id}/similar",
        action: "case.similar",
        access: Access::Roles(CASE_READERS),
    },
    RouteSpec { method: "GET", path: "/api/v1/jobs", action: "job.list", access: Access::Roles(JOB_USERS) },
    RouteSpec {
        method: "GET",
        path: "/api/v1/jobs/{id}",
        action: "job.get",
        access: Access::Roles(JOB_USERS),
    },
    RouteSpec {
        method: "POST",
        path: "/api/v1/jobs/{id}/cancel",
        action: "job.cancel",
        access: Access::Roles(JOB_USERS),
    },
    RouteSpec {
        method: "GET",
        path: "/api/v1/jobs/{id}/outputs",
        action: "job.outputs",
        access: Access::Roles(JOB_USERS),
    },
    RouteSpec {
        method: "GET",
        path: "/api/v1/jobs/{id}/outputs/{name}",
        action: "job.download",
        access: Access::Roles(JOB_USERS),
    },
    RouteSpec {
        method: "POST",
        path: "/api/v1/jobs/{id}/store-back",
        action: "job.store_back",
        access: Access::Roles(CASE_WRITERS),
    },
    RouteSpec {
        method: "GET",
        path: "/api/v1/normdb",
        action: "normdb.info",
        access: Access::Roles(NORMDB_READERS),
    },
    RouteSpec {
        method: "GET",
        path: "/api/v1/normdb/templates",
        action: "normdb.templates",
        access: Access::Roles(NORMDB_READERS),
    },
    RouteSpec {
        method: "POST",
        path: "/api/v1/normdb/builds",
        action: "normdb.build",
        access: Access::Roles(BUILDERS),
    },
    RouteSpec { method: "GET", path: "/api/v1/users", action: "user.list", access: Access::Roles(ADMINS) },
    RouteSpec {
        method: "POST",
        path: "/api/v1/users/{id}/disable",
        action: "user.disable",
        access: Access::Roles(ADMINS),
    },
    RouteSpec {
        method: "POST",
        path: "/api/v1/users/{id}/enable",
        action: "user.enable",
        access: Access::Roles(ADMINS),
    },
    RouteSpec {
        method: "POST",
        path: "/api/v1/users/{id}/rotate-token",
        action: "user.rotate_token",
        access: Access::Roles(ADMINS),
    },
    RouteSpec { method: "GET", path: "/api/v1/audit", action: "audit.read", access: Access::Roles(AUDITORS) },
    RouteSpec {
        method: "GET",
        path: "/api/v1/audit/verify",
        action: "audit.verify",
        access: Access::Roles(AUDITORS),
    },
    // The web viewer: whoever may read a job's outputs may view it.
    RouteSpec {
        method: "POST",
        path: "/viewer/session",
        action: "viewer.session_open",
        access: Access::Roles(JOB_USERS),
    },
    RouteSpec {
        method: "POST",
        path: "/viewer/session/end",
        action: "viewer.session_end",
        access: Access::Roles(JOB_USERS),
    },
    RouteSpec {
        method: "GET",
        path: "/viewer/jobs/{id}",
        action: "viewer.page",
        access: Access::Roles(JOB_USERS),
    },
    RouteSpec {
        method: "GET",
        path: "/viewer/jobs/{id}/manifest",
        action: "viewer.manifest",
        access: Access::Roles(JOB_USERS),
    },
    RouteSpec {
        method: "GET",
        path: "/viewer/jobs/{id}/files/{name}",
        action: "viewer.file",
        access: Access::Roles(JOB_USERS),
    },
    RouteSpec {
        method: "GET",
        path: "/viewer/assets/{name}",
        action: "viewer.asset",
        access: Access::Roles(JOB_USERS),
    },
];

/// Looks up the route for a method and a matched path template.
pub fn find(method: &str, path: &str) -> Option<&'static RouteSpec> {
    ROUTES.iter().find(|route| route.method == method && route.path == path)
}

/// The route a request is served under: `HEAD` follows the rule of `GET`; `None` when the
/// (method, path template) pair is not in the table (such a request never reaches a handler).
pub fn lookup(method: &str, path: &str) -> Option<&'static RouteSpec> {
    find(if method == "HEAD" { "GET" } else { method }, path)
}

/// The methods the table lists for a path template (`HEAD` with `GET`), comma-separated, for
/// the `Allow` header of a 405 answer; `None` when the path is not in the table.
pub fn allowed_methods(path: &str) -> Option<String> {
    let mut methods: Vec<&str> = ROUTES.iter().filter(|r| r.path == path).map(|r| r.method).collect();
    if methods.is_empty() {
        return None;
    }
    if methods.contains(&"GET") {
        methods.push("HEAD");
    }
    Some(methods.join(", "))
}

/// The role × endpoint table as Markdown (the one in `docs/service.md`).
pub fn markdown_table() -> String {
    let mut out = String::from("| method | path |");
    for role in Role::ALL {
        out.push_str(&format!(" {role} |"));
    }
    out.push_str("\n|---|---|");
    for _ in Role::ALL {
        out.push_str("---|");
    }
    out.push('\n');
    for route in ROUTES {
        out.push_str(&format!("| {} | `{}` |", route.method, route.path));
        for role in Role::ALL {
            let cell = match route.access {
                Access::Public => "public",
                Access::Roles(_) if route.allows(role) => "yes",
                Access::Roles(_) => "403",
            };
            out.push_str(&format!(" {cell} |"));
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_unique_and_auditors_only_read() {
        let mut seen = std::collections::BTreeSet::new();
        for route in ROUTES {
            assert!(
                seen.insert((route.method, route.path)),
                "duplicate route {} {}",
                route.method,
                route.path
            );
            if route.allows(Role::Auditor) && route.access != Access::Public {
                assert_eq!(route.method, "GET", "auditors may only read: {}", route.path);
            }
        }
    }

    #[test]
    fn role_names_round_trip() {
        for role in Role::ALL {
            assert_eq!(role.as_str().parse::<Role>().unwrap(), role);
        }
        assert!("root".parse::<Role>().is_err());
    }

    #[test]
    fn docs_table_matches_roles_rs() {
        let docs = include_str!("../../docs/service.md");
        let table = markdown_table();
        assert!(
            docs.contains(&table),
            "docs/service.md role table is stale; regenerate it from roles::markdown_table():\n{table}"
        );
    }
}
