use futures::StreamExt;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use tonic_reflection::pb::v1::{
    ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
    server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
};

use crate::helpers::{Backend, backend_tests, spawn_app};

backend_tests!(
    health_reports_serving_for_the_server_and_the_service,
    admin_liveness_and_readiness_answer_ok,
);

const SERVICE: &str = "catalogue.v1.CatalogueService";

async fn health_reports_serving_for_the_server_and_the_service(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    let mut health = HealthClient::new(app.channel.clone());

    for service in ["", SERVICE] {
        let response = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .expect("health check answers")
            .into_inner();
        assert_eq!(
            response.status(),
            ServingStatus::Serving,
            "service {service:?}"
        );
    }
    let status = health
        .check(HealthCheckRequest {
            service: "no.such.Service".into(),
        })
        .await
        .expect_err("unknown service");
    assert_eq!(status.code(), tonic::Code::NotFound);
}

async fn admin_liveness_and_readiness_answer_ok(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };

    for path in ["/healthz", "/readyz"] {
        let response = reqwest::get(app.admin_url(path))
            .await
            .expect("admin answers");
        assert_eq!(response.status(), 200, "{path}");
    }
}

#[tokio::test]
async fn reflection_lists_and_describes_the_services() {
    let app = crate::helpers::spawn_app(Backend::Memory)
        .await
        .expect("memory app");
    let mut reflection = ServerReflectionClient::new(app.channel.clone());
    let requests = futures::stream::iter([
        ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        },
        ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::FileContainingSymbol(SERVICE.into())),
        },
    ]);

    let mut responses = reflection
        .server_reflection_info(requests)
        .await
        .expect("reflection answers")
        .into_inner();

    let Some(MessageResponse::ListServicesResponse(list)) =
        responses.next().await.unwrap().unwrap().message_response
    else {
        panic!("expected a service list");
    };
    let mut names: Vec<_> = list.service.iter().map(|s| s.name.as_str()).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            SERVICE,
            "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection"
        ],
        "exactly what this server serves (not the inventory upstream's service)"
    );
    let Some(MessageResponse::FileDescriptorResponse(files)) =
        responses.next().await.unwrap().unwrap().message_response
    else {
        panic!("expected file descriptors");
    };
    assert!(!files.file_descriptor_proto.is_empty());
}

#[tokio::test]
async fn health_watch_streams_the_change_to_not_serving_on_shutdown() {
    let mut app = spawn_app(Backend::Memory).await.expect("memory app");
    let mut health = HealthClient::new(app.channel.clone());
    let mut watch = health
        .watch(HealthCheckRequest {
            service: SERVICE.into(),
        })
        .await
        .expect("watch opens")
        .into_inner();
    let first = watch.next().await.unwrap().unwrap();
    assert_eq!(first.status(), ServingStatus::Serving);

    app.begin_shutdown();

    let next = watch.next().await.unwrap().unwrap();
    assert_eq!(next.status(), ServingStatus::NotServing);
    drop(watch);
    app.stopped().await.expect("clean shutdown");
}
