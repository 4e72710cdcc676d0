// The benchmark's grpc-go peer: catalogue.v1.CatalogueService over the same
// deterministic seed catalogue as the Rust service's `memory` store (product
// n is derived from n alone, by the same splitmix64 draws), with
// go-grpc-prometheus interceptors and handling-time histograms, /metrics on a
// separate HTTP port, and the standard health service.
//
// It mirrors src/api/catalogue.rs, src/domain.rs and src/store/memory.rs for
// what the benchmark calls: GetProduct (INVALID_ARGUMENT for an empty or
// overlong id, NOT_FOUND for an unknown one), ListProducts (pages of up to
// 1000 in id order, the `x-next-page-token` trailer when more follow) and
// SearchProducts (every word, name matches first, offset page tokens).
//
// With -upstream ADDR, GetProduct also asks the inventory upstream
// (inventory.v1, `catalogue upstream`) for live stock, as src/upstream does,
// over one shared connection and with the caller's deadline (less
// -upstream-deadline-margin, so that the stored stock can still be answered
// in time), or -upstream-timeout when the caller set none; an upstream that
// cannot answer in time leaves the stored stock (`x-stock-source: stale`).
// Unlike the catalogue there is no bulkhead, no circuit breaker and no load
// shedding: every call gets a goroutine and waits, as the plain Go service of
// the overload experiment does (docs/tokio-scheduler.md).
//
// /metrics carries, next to go-grpc-prometheus' server and client metrics,
// Go's runtime/metrics through client_golang's Go collector: the scheduler
// (go_sched_latencies_seconds, go_sched_goroutines_goroutines,
// go_sched_gomaxprocs_threads), the GC (go_gc_pauses_seconds, cycles, heap
// goal) and memory by class (go_memory_classes_*), and the process collector
// (process_resident_memory_bytes).
//
// Built by go-peer/build.sh from Debian's Go packages only, offline, in
// module mode (go.mod); the protobuf and gRPC code is generated from proto/
// at build time.
//
// GOMAXPROCS is left at Go's default: every core of the machine.
package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"regexp"
	"runtime"
	runtimemetrics "runtime/metrics"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode"

	grpc_prometheus "github.com/grpc-ecosystem/go-grpc-prometheus"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "catalogue-go-peer/cataloguepb"
	inventorypb "catalogue-go-peer/inventorypb"
)

// The limits of src/domain.rs.
const (
	defaultListPageSize   = 50
	maxListPageSize       = 1000
	defaultSearchPageSize = 20
	maxSearchPageSize     = 100
	maxIDBytes            = 128
	maxQueryBytes         = 256
	maxSearchOffset       = 10000
	listTokenTag          = "list:"
	searchTokenTag        = "search:"
	nextPageTokenTrailer  = "x-next-page-token"
	stockSourceHeader     = "x-stock-source"
)

// ---- the seed catalogue (src/store/seed.rs) ----

type category struct {
	id    string
	nouns []string
}

var categories = []category{
	{"books", []string{"novel", "cookbook", "atlas", "journal", "biography", "anthology"}},
	{"electronics", []string{"headphones", "speaker", "charger", "keyboard", "monitor", "camera"}},
	{"garden", []string{"trowel", "planter", "hose", "shears", "birdhouse", "lantern"}},
	{"home", []string{"lamp", "blanket", "cushion", "vase", "mirror", "clock"}},
	{"kitchen", []string{"kettle", "skillet", "teapot", "grinder", "knife", "colander"}},
	{"outdoor", []string{"tent", "backpack", "hammock", "compass", "cooler", "flashlight"}},
	{"sports", []string{"racket", "dumbbell", "helmet", "jersey", "skateboard", "bottle"}},
	{"toys", []string{"puzzle", "kite", "robot", "marbles", "spinner", "blocks"}},
}

var adjectives = []string{
	"compact", "classic", "rustic", "modern", "vintage", "premium", "portable",
	"handmade", "lightweight", "sturdy", "elegant", "cozy", "bright", "minimalist",
}

var materials = []string{
	"oak", "walnut", "steel", "copper", "linen", "wool", "bamboo", "ceramic",
	"leather", "cotton", "glass", "granite",
}

var features = []string{
	"designed for everyday use",
	"built to last for years",
	"a thoughtful gift for friends and family",
	"easy to clean and care for",
	"ideal for small spaces",
	"finished by hand in a small workshop",
	"tested in harsh conditions",
	"made from responsibly sourced materials",
}

var closings = []string{
	"Ships in recyclable packaging.",
	"Backed by a two year warranty.",
	"Pairs well with the rest of the collection.",
	"Available while stock lasts.",
	"A favourite of our customers.",
}

// 2024-01-01T00:00:00Z: the first product's creation time.
const firstCreatedAt = 1704067200

type splitMix64 uint64

func (s *splitMix64) next() uint64 {
	*s += 0x9E3779B97F4A7C15
	z := uint64(*s)
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9
	z = (z ^ (z >> 27)) * 0x94D049BB133111EB
	return z ^ (z >> 31)
}

func (s *splitMix64) below(bound int) int {
	return int(s.next() % uint64(bound))
}

func capitalise(word string) string {
	if word == "" {
		return word
	}
	runes := []rune(word)
	runes[0] = unicode.ToUpper(runes[0])
	return string(runes)
}

func productID(n uint32) string {
	return fmt.Sprintf("prod-%07d", n)
}

// seedProduct is the nth product (1-based), drawn in the order seed.rs draws.
func seedProduct(n uint32) *pb.Product {
	rng := splitMix64(n)
	cat := categories[rng.below(len(categories))]
	noun := cat.nouns[rng.below(len(cat.nouns))]
	adjective := adjectives[rng.below(len(adjectives))]
	material := materials[rng.below(len(materials))]
	secondAdjective := adjectives[rng.below(len(adjectives))]
	feature := features[rng.below(len(features))]
	closing := closings[rng.below(len(closings))]
	id := productID(n)
	images := 1 + rng.below(3)
	priceCents := 199 + rng.below(49801)
	stock := rng.below(501)
	urls := make([]string, 0, images)
	for image := 1; image <= images; image++ {
		urls = append(urls, fmt.Sprintf("https://images.example.com/products/%s/%d.jpg", id, image))
	}
	return &pb.Product{
		Id:          id,
		Name:        capitalise(adjective) + " " + capitalise(material) + " " + capitalise(noun),
		Description: fmt.Sprintf("A %s %s in %s, %s. %s", secondAdjective, noun, material, feature, closing),
		PriceEur:    float64(priceCents) / 100.0,
		StockQty:    int32(stock),
		ImageUrls:   urls,
		CreatedAt:   &timestamppb.Timestamp{Seconds: firstCreatedAt + int64(n)*600},
		CategoryId:  cat.id,
	}
}

// words is domain::words: lowercase alphanumeric words.
func words(text string) []string {
	fields := strings.FieldsFunc(text, func(r rune) bool {
		return !unicode.IsLetter(r) && !unicode.IsNumber(r)
	})
	for i, field := range fields {
		fields[i] = strings.ToLower(field)
	}
	return fields
}

func contains(list []string, word string) bool {
	for _, w := range list {
		if w == word {
			return true
		}
	}
	return false
}

// ---- the in-memory store (src/store/memory.rs) ----

// catalogue is immutable after construction: reads take no lock. Products
// are kept as ready protobuf messages, as an in-memory Go service would.
type catalogue struct {
	products []*pb.Product // sorted by id
	byID     map[string]*pb.Product
	byWord   map[string][]int // sorted product indexes
}

func newCatalogue(count uint32) *catalogue {
	c := &catalogue{
		products: make([]*pb.Product, 0, count),
		byID:     make(map[string]*pb.Product, count),
		byWord:   map[string][]int{},
	}
	for n := uint32(1); n <= count; n++ {
		c.products = append(c.products, seedProduct(n))
	}
	sort.Slice(c.products, func(i, j int) bool { return c.products[i].Id < c.products[j].Id })
	for index, product := range c.products {
		c.byID[product.Id] = product
		for _, word := range append(words(product.Name), words(product.Description)...) {
			indexes := c.byWord[word]
			if len(indexes) == 0 || indexes[len(indexes)-1] != index {
				c.byWord[word] = append(indexes, index)
			}
		}
	}
	return c
}

// ---- request validation (src/domain.rs) ----

func invalid(format string, args ...interface{}) error {
	return status.Errorf(codes.InvalidArgument, format, args...)
}

func pageSize(raw int32, def, max int) (int, error) {
	if raw == 0 {
		return def, nil
	}
	if raw < 0 || int(raw) > max {
		return 0, invalid("page_size must be between 0 and %d, got %d", max, raw)
	}
	return int(raw), nil
}

func categoryFilter(raw string) (string, error) {
	if len(raw) > maxIDBytes {
		return "", invalid("category_id is longer than %d bytes", maxIDBytes)
	}
	return raw, nil
}

// decodeTagged returns the text after tag of a base64url (unpadded) token;
// ok is false for an empty token.
func decodeTagged(token, tag string) (rest string, ok bool, err error) {
	if token == "" {
		return "", false, nil
	}
	bytes, decodeErr := base64.RawURLEncoding.DecodeString(token)
	if decodeErr != nil || !strings.HasPrefix(string(bytes), tag) {
		return "", false, invalid("page_token is malformed")
	}
	return strings.TrimPrefix(string(bytes), tag), true, nil
}

func encodeTagged(tag, value string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(tag + value))
}

// ---- the service (src/api/catalogue.rs) ----

type server struct {
	pb.UnimplementedCatalogueServiceServer
	catalogue *catalogue
	// nil without -upstream: the stored stock, no header.
	inventory inventorypb.InventoryServiceClient
	// Of an upstream call when the caller set no deadline.
	upstreamTimeout time.Duration
	// Kept from the caller's deadline to answer with the stored stock.
	deadlineMargin time.Duration
}

// stock asks the upstream for live stock within the caller's deadline, less
// the margin (or -upstream-timeout without one). No bulkhead, no breaker:
// every call waits on the upstream for as long as its deadline allows.
func (s *server) stock(ctx context.Context, productID string) (int32, bool) {
	var cancel context.CancelFunc
	if deadline, ok := ctx.Deadline(); ok {
		left := time.Until(deadline) - s.deadlineMargin
		if left <= 0 {
			return 0, false
		}
		ctx, cancel = context.WithTimeout(ctx, left)
	} else {
		ctx, cancel = context.WithTimeout(ctx, s.upstreamTimeout)
	}
	defer cancel()
	response, err := s.inventory.GetStock(ctx, &inventorypb.GetStockRequest{ProductId: productID})
	if err != nil {
		return 0, false
	}
	return response.StockQty, true
}

func (s *server) GetProduct(ctx context.Context, request *pb.GetProductRequest) (*pb.Product, error) {
	id := request.ProductId
	if id == "" {
		return nil, invalid("product_id is required")
	}
	if len(id) > maxIDBytes {
		return nil, invalid("product_id is longer than %d bytes", maxIDBytes)
	}
	product, found := s.catalogue.byID[id]
	if !found {
		return nil, status.Errorf(codes.NotFound, "product %q not found", id)
	}
	if s.inventory == nil {
		return product, nil
	}
	source := "stale"
	if stock, live := s.stock(ctx, id); live {
		product = proto.Clone(product).(*pb.Product)
		product.StockQty = stock
		source = "live"
	}
	_ = grpc.SetHeader(ctx, metadata.Pairs(stockSourceHeader, source))
	return product, nil
}

func (s *server) ListProducts(request *pb.ListProductsRequest, stream pb.CatalogueService_ListProductsServer) error {
	after, hasAfter, err := decodeTagged(request.PageToken, listTokenTag)
	if err != nil {
		return err
	}
	if hasAfter && (after == "" || len(after) > maxIDBytes) {
		return invalid("page_token is malformed")
	}
	category, err := categoryFilter(request.CategoryId)
	if err != nil {
		return err
	}
	size, err := pageSize(request.PageSize, defaultListPageSize, maxListPageSize)
	if err != nil {
		return err
	}
	products := s.catalogue.products
	start := 0
	if hasAfter {
		start = sort.Search(len(products), func(i int) bool { return products[i].Id > after })
	}
	sent := 0
	last := ""
	for _, product := range products[start:] {
		if category != "" && product.CategoryId != category {
			continue
		}
		if sent == size {
			// A full page followed by at least one more product.
			stream.SetTrailer(metadata.Pairs(nextPageTokenTrailer, encodeTagged(listTokenTag, last)))
			return nil
		}
		if err := stream.Send(product); err != nil {
			return err
		}
		sent++
		last = product.Id
	}
	return nil
}

func (s *server) SearchProducts(_ context.Context, request *pb.SearchRequest) (*pb.SearchResponse, error) {
	if strings.TrimSpace(request.Query) == "" {
		return nil, invalid("query is required")
	}
	if len(request.Query) > maxQueryBytes {
		return nil, invalid("query is longer than %d bytes", maxQueryBytes)
	}
	category, err := categoryFilter(request.CategoryId)
	if err != nil {
		return nil, err
	}
	offset := 0
	if rest, ok, err := decodeTagged(request.PageToken, searchTokenTag); err != nil {
		return nil, err
	} else if ok {
		parsed, parseErr := strconv.ParseUint(rest, 10, 32)
		if parseErr != nil || parsed > maxSearchOffset {
			return nil, invalid("page_token is malformed")
		}
		offset = int(parsed)
	}
	size, err := pageSize(request.PageSize, defaultSearchPageSize, maxSearchPageSize)
	if err != nil {
		return nil, err
	}
	queryWords := words(request.Query)
	response := &pb.SearchResponse{}
	if len(queryWords) == 0 {
		return response, nil
	}
	type match struct {
		score   int
		product *pb.Product
	}
	var matches []match
	for _, index := range s.catalogue.byWord[queryWords[0]] {
		all := true
		for _, word := range queryWords[1:] {
			indexes := s.catalogue.byWord[word]
			at := sort.SearchInts(indexes, index)
			if at == len(indexes) || indexes[at] != index {
				all = false
				break
			}
		}
		product := s.catalogue.products[index]
		if !all || (category != "" && product.CategoryId != category) {
			continue
		}
		name, description := words(product.Name), words(product.Description)
		score := 0
		for _, word := range queryWords {
			if contains(name, word) {
				score += 10
			}
			if contains(description, word) {
				score++
			}
		}
		matches = append(matches, match{score, product})
	}
	// Candidates are in id order already: a stable sort keeps ties by id.
	sort.SliceStable(matches, func(i, j int) bool { return matches[i].score > matches[j].score })
	if offset > len(matches) {
		offset = len(matches)
	}
	matches = matches[offset:]
	if len(matches) > size {
		matches = matches[:size]
		if next := offset + size; next <= maxSearchOffset {
			response.NextPageToken = encodeTagged(searchTokenTag, strconv.Itoa(next))
		}
	}
	for _, m := range matches {
		response.Products = append(response.Products, m.product)
	}
	return response, nil
}

// registerRuntimeMetrics replaces the default Go collector by one that also
// exports runtime/metrics' scheduler, GC and memory-class metrics, named by
// client_golang's rule (/sched/latencies:seconds is
// go_sched_latencies_seconds). Go 1.19, Debian 12's, has no
// /sched/gomaxprocs:threads (Go 1.20 added it): the gauge of the same name is
// then set from runtime.GOMAXPROCS, so that the dashboards work on both.
func registerRuntimeMetrics() {
	prometheus.Unregister(collectors.NewGoCollector())
	prometheus.MustRegister(collectors.NewGoCollector(
		collectors.WithGoCollectorRuntimeMetrics(collectors.GoRuntimeMetricsRule{
			Matcher: regexp.MustCompile(`^/(sched|gc|memory/classes)/.*`),
		}),
	))
	for _, description := range runtimemetrics.All() {
		if description.Name == "/sched/gomaxprocs:threads" {
			return
		}
	}
	prometheus.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "go_sched_gomaxprocs_threads",
		Help: "The current runtime.GOMAXPROCS setting, or the number of operating system threads that can execute user-level Go code simultaneously.",
	}, func() float64 { return float64(runtime.GOMAXPROCS(0)) }))
}

func main() {
	addr := flag.String("addr", "127.0.0.1:50061", "gRPC listen address (port 0: chosen by the system)")
	metricsAddr := flag.String("metrics-addr", "127.0.0.1:6071", "HTTP address of /metrics")
	products := flag.Uint("products", 10000, "products in the seed catalogue")
	upstream := flag.String("upstream", "", "inventory upstream (inventory.v1) host:port; empty: the stored stock")
	// The catalogue's --upstream-timeout and --upstream-deadline-margin
	// defaults (src/config.rs).
	upstreamTimeout := flag.Duration("upstream-timeout", time.Second, "timeout of an upstream call when the caller set no deadline")
	deadlineMargin := flag.Duration("upstream-deadline-margin", 20*time.Millisecond, "kept from the caller's deadline to answer with the stored stock in time (0: the whole deadline)")
	readyFile := flag.String("ready-file", "", "once listening, write the bound addresses here as JSON, as the catalogue's --ready-file does")
	flag.Parse()

	grpcListener, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	metricsListener, err := net.Listen("tcp", *metricsAddr)
	if err != nil {
		log.Fatal(err)
	}

	registerRuntimeMetrics()
	grpc_prometheus.EnableHandlingTimeHistogram()
	grpc_prometheus.EnableClientHandlingTimeHistogram()
	service := &server{
		catalogue:       newCatalogue(uint32(*products)),
		upstreamTimeout: *upstreamTimeout,
		deadlineMargin:  *deadlineMargin,
	}
	if *upstream != "" {
		// One connection shared by every call, dialled lazily (the service
		// starts while the upstream is down), like the catalogue's channel.
		connection, err := grpc.Dial(*upstream,
			grpc.WithInsecure(), // grpc-go 1.33 (Debian 12): no credentials/insecure yet
			grpc.WithUnaryInterceptor(grpc_prometheus.UnaryClientInterceptor))
		if err != nil {
			log.Fatal(err)
		}
		service.inventory = inventorypb.NewInventoryServiceClient(connection)
	}
	grpcServer := grpc.NewServer(
		grpc.UnaryInterceptor(grpc_prometheus.UnaryServerInterceptor),
		grpc.StreamInterceptor(grpc_prometheus.StreamServerInterceptor),
	)
	pb.RegisterCatalogueServiceServer(grpcServer, service)
	// SERVING for the whole server ("") and for the service by name, which
	// `catalogue load` watches before it sends, as the catalogue does.
	healthServer := health.NewServer()
	healthServer.SetServingStatus("catalogue.v1.CatalogueService", healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(grpcServer, healthServer)
	grpc_prometheus.Register(grpcServer)

	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.Handler())
	go func() { log.Fatal(http.Serve(metricsListener, mux)) }()

	// The bound addresses, in the catalogue's ready-file format (its
	// "admin" is this peer's /metrics): on standard output, and with
	// -ready-file in that file, written beside it and renamed into place.
	ready, _ := json.Marshal(map[string]interface{}{
		"grpc":    grpcListener.Addr().String(),
		"admin":   metricsListener.Addr().String(),
		"console": nil,
	})
	fmt.Fprintln(os.Stdout, string(ready))
	if *readyFile != "" {
		if err := writeAtomically(*readyFile, ready); err != nil {
			log.Fatal(err)
		}
	}
	log.Fatal(grpcServer.Serve(grpcListener))
}

// writeAtomically writes data to a temporary file beside path, then renames
// it over path: a reader sees all of it or no file.
func writeAtomically(path string, data []byte) error {
	temporary := fmt.Sprintf("%s.%d.tmp", path, os.Getpid())
	if err := os.WriteFile(temporary, data, 0o644); err != nil {
		return err
	}
	if err := os.Rename(temporary, path); err != nil {
		os.Remove(temporary)
		return err
	}
	return nil
}
