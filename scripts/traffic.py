"""Drives every kind of call the dashboards show, errors included, through
the Python client generated from proto/, until time runs out:
GetProduct (found and NotFound), SearchProducts, whole ListProducts streams,
and ListProducts streams the client cancels after the first message.

Usage: python scripts/traffic.py HOST:PORT GENERATED_DIR SECONDS [RPS]
(stands in for `catalogue load` in scripts/check-dashboards.sh)
"""

import itertools
import sys
import time

sys.path.insert(0, sys.argv[2])

import grpc  # noqa: E402
from catalogue.v1 import catalogue_pb2 as pb  # noqa: E402
from catalogue.v1 import catalogue_pb2_grpc as rpc  # noqa: E402


def main(target: str, seconds: float, rps: float) -> None:
    calls = {}
    with grpc.insecure_channel(target) as channel:
        stub = rpc.CatalogueServiceStub(channel)
        products = list(stub.ListProducts(pb.ListProductsRequest(page_size=100)))
        words = sorted({p.name.split()[-1] for p in products})
        deadline = time.monotonic() + seconds
        for i in itertools.count():
            if time.monotonic() >= deadline:
                break
            started = time.monotonic()
            kind = call(stub, i, products, words)
            calls[kind] = calls.get(kind, 0) + 1
            time.sleep(max(0.0, 1 / rps - (time.monotonic() - started)))
    print("traffic:", ", ".join(f"{n} {kind}" for kind, n in sorted(calls.items())))


def call(stub, i, products, words) -> str:
    """One call; every tenth is an error or a cancellation."""
    if i % 10 == 3:
        try:
            stub.GetProduct(pb.GetProductRequest(product_id="prod-missing"))
        except grpc.RpcError as error:
            assert error.code() == grpc.StatusCode.NOT_FOUND, error
        return "GetProduct NotFound"
    if i % 10 == 7:
        # Far more than the HTTP/2 window holds: the server is still sending
        # when the client cancels.
        stream = stub.ListProducts(pb.ListProductsRequest(page_size=1000))
        next(stream)
        stream.cancel()
        return "ListProducts cancelled"
    if i % 10 == 5:
        for _ in stub.ListProducts(pb.ListProductsRequest(page_size=50)):
            pass
        return "ListProducts"
    if i % 10 == 9:
        stub.SearchProducts(pb.SearchRequest(query=words[i % len(words)], page_size=10))
        return "SearchProducts"
    stub.GetProduct(pb.GetProductRequest(product_id=products[i % len(products)].id))
    return "GetProduct"


if __name__ == "__main__":
    main(sys.argv[1], float(sys.argv[3]), float(sys.argv[4]) if len(sys.argv) > 4 else 100)
