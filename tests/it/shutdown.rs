use catalogue::api::proto::{GetProductRequest, ListProductsRequest};

use crate::helpers::{Backend, CATALOGUE_SIZE, TestApp};

#[tokio::test]
async fn an_open_stream_drains_to_its_end_after_shutdown_begins() {
    let mut app = TestApp::builder().backend(Backend::Sqlite).spawn().await;
    let request = ListProductsRequest {
        page_size: CATALOGUE_SIZE as i32,
        ..Default::default()
    };
    let mut stream = app
        .client
        .list_products(request)
        .await
        .expect("stream opens")
        .into_inner();
    let mut received = usize::from(stream.message().await.expect("first product").is_some());

    app.begin_shutdown();
    while let Some(_product) = stream
        .message()
        .await
        .expect("stream keeps going while draining")
    {
        received += 1;
    }

    assert_eq!(
        received, CATALOGUE_SIZE as usize,
        "the in-flight stream completed"
    );
    app.stopped().await.expect("run_until_stopped returns Ok");
}

#[tokio::test]
async fn no_new_calls_are_accepted_once_stopped() {
    let app = TestApp::builder().spawn().await;
    let grpc_addr = app.grpc_addr;
    app.stop().await.expect("clean shutdown");

    let connection = tonic::transport::Channel::from_shared(format!("http://{grpc_addr}"))
        .unwrap()
        .connect()
        .await;

    match connection {
        Err(_) => {}
        Ok(channel) => {
            let mut client =
                catalogue::api::proto::catalogue_service_client::CatalogueServiceClient::new(
                    channel,
                );
            let status = client
                .get_product(GetProductRequest {
                    product_id: "prod-0000001".into(),
                })
                .await
                .expect_err("a stopped server answers nothing");
            assert_eq!(status.code(), tonic::Code::Unavailable);
        }
    }
}
