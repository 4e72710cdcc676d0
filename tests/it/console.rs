//! tokio-console attaches over its real gRPC protocol and sees named tasks.

use console_api::{
    field::{Name, Value},
    instrument::{InstrumentRequest, instrument_client::InstrumentClient},
};

use crate::helpers::{Backend, spawn_app_with};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_reports_the_servers_named_tasks() {
    let app = spawn_app_with(Backend::Memory, &["--console"])
        .await
        .expect("memory app");
    let console_addr = app.console_addr.expect("--console serves the console");
    let mut console = InstrumentClient::connect(format!("http://{console_addr}"))
        .await
        .expect("console attaches");

    let mut updates = console
        .watch_updates(InstrumentRequest {})
        .await
        .expect("watch starts")
        .into_inner();
    let mut names = Vec::new();
    while let Some(update) = updates.message().await.expect("updates stream") {
        let tasks = update
            .task_update
            .map(|tasks| tasks.new_tasks)
            .unwrap_or_default();
        names.extend(
            tasks
                .iter()
                .flat_map(|task| &task.fields)
                .filter_map(|field| match (&field.name, &field.value) {
                    (
                        Some(Name::StrName(name)),
                        Some(Value::StrVal(value) | Value::DebugVal(value)),
                    ) if name == "task.name" => Some(value.trim_matches('"').to_owned()),
                    _ => None,
                }),
        );
        // Tasks arrive over several updates, in no set order.
        if ["grpc-server", "admin-server"]
            .iter()
            .all(|wanted| names.iter().any(|name| name == wanted))
        {
            return;
        }
    }
    panic!("the update stream ended without the named tasks: {names:?}");
}
