//! A caller's [`Scope`] rendered as SQL: the dossiers (table alias `d`) and the documents
//! (alias `doc`) it may read. The search renders the same value as its permission clause
//! (`index::scope`), so a listing and a search never disagree on who sees what.

use super::{Backend, Sql};
use crate::domain::{Scope, Visibility};

/// Appends `(…)`: the dossiers (alias `d`) `scope` may read.
pub fn push_dossiers(sql: &mut Sql, backend: Backend, scope: &Scope) {
    match scope {
        Scope::Nothing => {
            sql.push("(1 = 0)");
        }
        Scope::Tenant { tenant } => {
            sql.push("(d.tenant = ")
                .bind(tenant.clone())
                .push(" and d.status <> 'draft')");
        }
        Scope::Offices { offices, .. } if offices.is_empty() => {
            sql.push("(1 = 0)");
        }
        Scope::Offices { tenant, offices } => {
            sql.push("(d.tenant = ")
                .bind(tenant.clone())
                .push(" and d.status <> 'draft' and d.office_code in (");
            for (i, office) in offices.iter().enumerate() {
                if i > 0 {
                    sql.push(", ");
                }
                sql.bind(office.clone());
            }
            sql.push("))");
        }
        Scope::PublicOf { dossiers, .. } if dossiers.is_empty() => {
            sql.push("(1 = 0)");
        }
        Scope::PublicOf { tenant, dossiers } => {
            // One parameter holding the ids as a JSON array, whatever their number (a busy
            // professional has hundreds; a statement binds at most some tens of thousands).
            let ids = serde_json::to_string(&**dossiers).expect("strings serialise");
            sql.push("(d.tenant = ").bind(tenant.clone());
            match backend {
                Backend::Sqlite => sql.push(" and d.id in (select value from json_each("),
                Backend::Postgres => {
                    sql.push(" and d.id in (select jsonb_array_elements_text(cast(")
                }
            };
            sql.bind(ids);
            match backend {
                Backend::Sqlite => sql.push(")))"),
                Backend::Postgres => sql.push(" as jsonb))))"),
            };
        }
    }
}

/// Appends `(…)`: the documents (alias `doc`) `scope` may read inside the dossiers it may
/// read: public ones only for those who take part in dossiers.
pub fn push_documents(sql: &mut Sql, scope: &Scope) {
    match scope {
        Scope::Nothing => sql.push("(1 = 0)"),
        Scope::Tenant { .. } | Scope::Offices { .. } => sql.push("(1 = 1)"),
        Scope::PublicOf { .. } => sql
            .push("(doc.visibility = ")
            .bind(Visibility::Public.as_str().to_owned())
            .push(")"),
    };
}
