//! The instances page: live instances (heartbeats: host, pid, version, start, last beat)
//! and every consumer of the env's groups with its pending entries and idle time per
//! stream ([`crate::ops::instances::list`], as the API and the CLI).

use axum::http::StatusCode;
use axum::response::Response;

use crate::console::guard::Console;
use crate::console::{ConsoleError, render};
use crate::http::api::bounded;
use crate::ops::dlq::DlqError;
use crate::ops::instances::{self, Instance};

/// The page.
#[derive(askama::Template)]
#[template(path = "console/instances.html")]
struct InstancesPage {
    nav: &'static str,
    csrf: String,
    list: Vec<Instance>,
}

/// GET /ui/instances.
pub async fn page(c: Console) -> Result<Response, ConsoleError> {
    let list = bounded(async {
        Ok(instances::list(&c.worker.store, &c.worker.keys)
            .await
            .map_err(DlqError::Store)?)
    })
    .await?;
    let page = InstancesPage {
        nav: "instances",
        csrf: c.csrf,
        list,
    };
    Ok(render(StatusCode::OK, &page))
}
