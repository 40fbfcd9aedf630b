/* test_xet_session.c - the Xet side of hub.c (what the LFS batch offers, Xet answers, the write
 * token route) and xet_session.c's CAS requests against a canned-answer server
 * (tests/unit/http_echo.py): the token fetched once and sent only to the CAS, refreshed once after
 * a 401, a 503 retried, garbage answers named as such, and the CAS token never in a message. */
#include "http.h"
#include "hub.h"
#include "xet_session.h"

#include "testutil.h"

#define TOKEN "hf_hub_test_token_0123456789"
#define CAS_TOKEN "xet_secret_cas_token_abcdef0123456789"
#define SHA_A "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"

static uv_loop_t loop;
static struct http *http;
static struct test_hub srv;

struct res {
    int done;
    int ok;
    struct ckpt_err err;
    size_t body_len;
    int had_body;
};

static void on_done(void *ctx, const struct ckpt_err *err)
{
    struct res *r = ctx;
    r->done = 1;
    r->ok = err == NULL;
    if (err != NULL)
        r->err = *err;
}

static void on_cas(void *ctx, const struct ckpt_err *err, const uint8_t *body, size_t len)
{
    struct res *r = ctx;
    on_done(ctx, err);
    r->had_body = body != NULL;
    r->body_len = len;
}

static void wait_res(struct res *r)
{
    test_run_until(&loop, &r->done);
    CHECK(strstr(r->err.msg, TOKEN) == NULL);
    CHECK(strstr(r->err.msg, CAS_TOKEN) == NULL);
}

static void expect_err(const struct res *r, enum ckpt_err_kind kind, const char *hint)
{
    CHECK(!r->ok && r->err.kind == kind);
    if (hint != NULL && strstr(r->err.msg, hint) == NULL) {
        fprintf(stderr, "message '%s' lacks '%s'\n", r->err.msg, hint);
        test_failures++;
    }
}

static struct hub *new_hub(enum hub_transfer mode)
{
    char endpoint[300];
    struct hub *hub;
    struct ckpt_err e;
    snprintf(endpoint, sizeof(endpoint), "%s/hub", srv.endpoint);
    struct hub_config cfg = {
        .endpoint = endpoint, .token = TOKEN, .repo_id = "alice/m", .transfer = mode};
    REQUIRE(hub_init(&hub, http, &cfg, &e) == 0);
    return hub;
}

static void batch(struct hub *hub, const char *answer, struct hub_lfs_object *o, struct res *r)
{
    memset(r, 0, sizeof(*r));
    memset(o, 0, sizeof(*o));
    memcpy(o->oid, SHA_A, 65);
    o->size = 100;
    test_echo_canned(&srv, 200, NULL, answer);
    REQUIRE(hub_lfs_batch(hub, o, 1, on_done, r, NULL) == 0);
    wait_res(r);
}

static void test_batch_offers_and_answers(void)
{
    struct hub_lfs_object o;
    struct res r;
    char answer[1024];
    cJSON *j, *body;

    /* auto: "xet" offered beside basic and multipart; a Xet answer gives the CAS and token */
    struct hub *hub = new_hub(HUB_TRANSFER_AUTO);
    snprintf(
        answer, sizeof(answer),
        "{\"transfer\":\"xet\",\"objects\":[{\"oid\":\"" SHA_A "\",\"size\":100,"
        "\"actions\":{\"upload\":{\"href\":\"%s/hub/api/models/alice/m/xet-write-token/"
        "main\",\"header\":{\"X-Xet-Cas-Url\":\"%s/hub/cas\",\"x-xet-access-token\":\"" CAS_TOKEN
        "\",\"X-Xet-Token-Expiration\":\"4102444800\",\"X-Xet-Session-Id\":\"s1\"}}}}]}",
        srv.endpoint, srv.endpoint);
    batch(hub, answer, &o, &r);
    CHECK(r.ok && o.action == HUB_LFS_XET);
    CHECK(o.xet_token != NULL && strcmp(o.xet_token, CAS_TOKEN) == 0);
    CHECK(o.xet_cas_url != NULL && strstr(o.xet_cas_url, "/hub/cas") != NULL);
    CHECK(o.xet_token_exp == 4102444800);
    CHECK(o.xet_session_id != NULL && strcmp(o.xet_session_id, "s1") == 0);
    j = test_echo_last(&srv);
    body = cJSON_Parse(test_json_str(j, "body", NULL));
    char *offer = cJSON_PrintUnformatted(cJSON_GetObjectItemCaseSensitive(body, "transfers"));
    CHECK(offer != NULL && strcmp(offer, "[\"basic\",\"multipart\",\"xet\"]") == 0);
    free(offer);
    cJSON_Delete(body);
    cJSON_Delete(j);
    hub_lfs_object_release(&o);
    /* auto, answered basic: LFS as before */
    batch(hub,
          "{\"transfer\":\"basic\",\"objects\":[{\"oid\":\"" SHA_A "\",\"size\":100,"
          "\"actions\":{\"upload\":{\"href\":\"http://s/put\"}}}]}",
          &o, &r);
    CHECK(r.ok && o.action == HUB_LFS_BASIC);
    hub_lfs_object_release(&o);
    /* a Xet answer whose CAS URL is not http(s) */
    batch(hub,
          "{\"transfer\":\"xet\",\"objects\":[{\"oid\":\"" SHA_A "\",\"size\":100,"
          "\"actions\":{\"upload\":{\"href\":\"http://s/t\",\"header\":{\"X-Xet-Cas-Url\":"
          "\"file:///etc\",\"X-Xet-Access-Token\":\"t\"}}}}]}",
          &o, &r);
    expect_err(&r, CKPT_ERR_PROTOCOL, "X-Xet-Cas-Url");
    hub_free(hub);

    /* xet: only "xet" offered; an LFS answer for an object to send is refused, clearly */
    hub = new_hub(HUB_TRANSFER_XET);
    batch(hub,
          "{\"transfer\":\"basic\",\"objects\":[{\"oid\":\"" SHA_A "\",\"size\":100,"
          "\"actions\":{\"upload\":{\"href\":\"http://s/put\"}}}]}",
          &o, &r);
    expect_err(&r, CKPT_ERR_REJECTED, "the hub does not offer Xet uploads");
    j = test_echo_last(&srv);
    body = cJSON_Parse(test_json_str(j, "body", NULL));
    offer = cJSON_PrintUnformatted(cJSON_GetObjectItemCaseSensitive(body, "transfers"));
    CHECK(offer != NULL && strcmp(offer, "[\"xet\"]") == 0);
    free(offer);
    cJSON_Delete(body);
    cJSON_Delete(j);
    /* ... but an object the Hub already has needs no transfer at all */
    batch(hub, "{\"objects\":[{\"oid\":\"" SHA_A "\",\"size\":100}]}", &o, &r);
    CHECK(r.ok && o.action == HUB_LFS_STORED);
    hub_free(hub);

    /* lfs: exactly the old offer; a Xet answer we never asked for is a protocol error */
    hub = new_hub(HUB_TRANSFER_LFS);
    batch(hub,
          "{\"transfer\":\"xet\",\"objects\":[{\"oid\":\"" SHA_A "\",\"size\":100,"
          "\"actions\":{\"upload\":{\"href\":\"http://s/t\"}}}]}",
          &o, &r);
    expect_err(&r, CKPT_ERR_PROTOCOL, "did not offer");
    j = test_echo_last(&srv);
    body = cJSON_Parse(test_json_str(j, "body", NULL));
    offer = cJSON_PrintUnformatted(cJSON_GetObjectItemCaseSensitive(body, "transfers"));
    CHECK(offer != NULL && strcmp(offer, "[\"basic\",\"multipart\"]") == 0);
    free(offer);
    cJSON_Delete(body);
    cJSON_Delete(j);
    hub_free(hub);
}

static void token_answer(int64_t exp)
{
    char body[512];
    snprintf(body, sizeof(body),
             "{\"accessToken\":\"" CAS_TOKEN "\",\"exp\":%lld,\"casUrl\":\"%s/hub/cas/\"}",
             (long long)exp, srv.endpoint);
    test_echo_canned(&srv, 200, NULL, body);
}

static void shard(struct xet_session *s, struct res *r)
{
    static const uint8_t bytes[] = "shard-bytes";
    memset(r, 0, sizeof(*r));
    REQUIRE(xet_post_shard(s, bytes, sizeof(bytes) - 1, on_cas, r, NULL) == 0);
    wait_res(r);
}

static void test_cas_requests(void)
{
    struct hub *hub = new_hub(HUB_TRANSFER_XET);
    struct xet_session *s;
    struct xet_session_stats st;
    struct res r;
    cJSON *j;
    int64_t later = (int64_t)time(NULL) + 3600;
    REQUIRE(xet_session_new(&s, &loop, hub, NULL) == 0);

    /* the first request fetches the write token from the Hub, then goes to the CAS with it */
    token_answer(later);
    test_echo_canned(&srv, 200, NULL, "{\"result\":0}");
    shard(s, &r);
    CHECK(r.ok);
    j = test_echo_last(&srv);
    CHECK(strcmp(test_json_str(j, "path", NULL), "/hub/cas/v1/shards") == 0);
    CHECK(strcmp(test_json_str(j, "headers", "authorization"), "Bearer " CAS_TOKEN) == 0);
    CHECK(strcmp(test_json_str(j, "body", NULL), "shard-bytes") == 0);
    cJSON_Delete(j);
    xet_session_get_stats(s, &st);
    CHECK(st.token_refreshes == 1 && st.shards_sent == 1);

    /* a valid token is reused; a 503 is retried */
    test_echo_canned(&srv, 503, NULL, "{\"error\":\"busy\"}");
    test_echo_canned(&srv, 200, NULL, "{\"result\":1}");
    shard(s, &r);
    CHECK(r.ok);
    xet_session_get_stats(s, &st);
    CHECK(st.token_refreshes == 1);

    /* a 401 from the CAS: one fresh token, one more try */
    test_echo_canned(&srv, 401, NULL, "{\"error\":\"token expired\"}");
    token_answer(later);
    test_echo_canned(&srv, 200, NULL, "{\"result\":0}");
    shard(s, &r);
    CHECK(r.ok);
    xet_session_get_stats(s, &st);
    CHECK(st.token_refreshes == 2);
    /* ... only once: a second 401 is an auth error naming the CAS, never the token */
    test_echo_canned(&srv, 401, NULL, "{\"error\":\"no good: " CAS_TOKEN "\"}");
    token_answer(later);
    test_echo_canned(&srv, 401, NULL, "{\"error\":\"still no good: " CAS_TOKEN "\"}");
    shard(s, &r);
    expect_err(&r, CKPT_ERR_AUTH, "refused the Xet token");
    CHECK(strstr(r.err.msg, "/hub/cas") == NULL); /* the origin only */
    CHECK(strstr(r.err.msg, "still no good: ***") != NULL);

    /* garbage: a 2xx that is not the route's JSON is named, never taken as success */
    token_answer(later);
    test_echo_canned(&srv, 200, "{\"Content-Type\":\"text/html\"}", "<html>proxy login</html>");
    shard(s, &r);
    expect_err(&r, CKPT_ERR_PROTOCOL, "answered garbage");
    test_echo_canned(&srv, 200, NULL, "[1,2]");
    memset(&r, 0, sizeof(r));
    struct xet_hash h = {{1, 2, 3}};
    char path[600];
    snprintf(path, sizeof(path), "%s/xorb", srv.dir);
    FILE *f = fopen(path, "wb");
    REQUIRE(f != NULL && fwrite("xorb-bytes", 1, 10, f) == 10);
    fclose(f);
    REQUIRE(xet_post_xorb(s, &h, path, 10, NULL, on_cas, &r, NULL) == 0);
    wait_res(&r);
    expect_err(&r, CKPT_ERR_PROTOCOL, "not a JSON object with 'was_inserted'");
    j = test_echo_last(&srv);
    char hex[XET_HASH_HEX_LEN + 1];
    xet_hash_to_hex(&h, hex);
    char want[200];
    snprintf(want, sizeof(want), "/hub/cas/v1/xorbs/default/%s", hex);
    CHECK(strcmp(test_json_str(j, "path", NULL), want) == 0);
    CHECK(strcmp(test_json_str(j, "body", NULL), "xorb-bytes") == 0);
    cJSON_Delete(j);

    /* dedup query: 404 is "no match", 200 hands the shard bytes over */
    test_echo_canned(&srv, 404, NULL, "{}");
    memset(&r, 0, sizeof(r));
    REQUIRE(xet_query_chunk(s, &h, on_cas, &r, NULL) == 0);
    wait_res(&r);
    CHECK(r.ok && !r.had_body);
    test_echo_canned(&srv, 200, "{\"Content-Type\":\"application/octet-stream\"}", "SHARDDATA");
    memset(&r, 0, sizeof(r));
    REQUIRE(xet_query_chunk(s, &h, on_cas, &r, NULL) == 0);
    wait_res(&r);
    CHECK(r.ok && r.had_body && r.body_len == 9);

    /* a token route answering garbage, or an expired token, fails the waiting requests */
    xet_session_free(s);
    REQUIRE(xet_session_new(&s, &loop, hub, NULL) == 0);
    test_echo_canned(&srv, 200, NULL, "{\"accessToken\":17}");
    shard(s, &r);
    expect_err(&r, CKPT_ERR_PROTOCOL, "Xet write token");
    j = test_echo_last(&srv);
    CHECK(strcmp(test_json_str(j, "path", NULL), "/hub/api/models/alice/m/xet-write-token/main") ==
          0);
    CHECK(strcmp(test_json_str(j, "headers", "authorization"), "Bearer " TOKEN) == 0);
    cJSON_Delete(j);
    token_answer((int64_t)time(NULL) - 10);
    shard(s, &r);
    expect_err(&r, CKPT_ERR_PROTOCOL, "expired");
    test_echo_canned(&srv, 501, NULL, "{\"error\":\"Xet is off on this hub\"}");
    test_echo_canned(&srv, 501, NULL,
                     "{\"error\":\"Xet is off on this hub\"}"); /* 5xx: retried once */
    shard(s, &r);
    expect_err(&r, CKPT_ERR_SERVER, "Xet is off");
    xet_session_free(s);
    hub_free(hub);
}

/* The spec's rule (xet-core's hash_is_global_dedup_eligible): the hash's last 64-bit word,
 * little endian, is 0 mod 1024. */
static void test_dedup_eligibility(void)
{
    struct xet_hash h = {{0}};
    CHECK(xet_chunk_dedup_eligible(&h));
    h.b[24] = 5;
    CHECK(!xet_chunk_dedup_eligible(&h));
    h.b[24] = 0;
    h.b[25] = 4; /* 1024 */
    CHECK(xet_chunk_dedup_eligible(&h));
    h.b[0] = 1; /* the other words do not count */
    CHECK(xet_chunk_dedup_eligible(&h));
    h.b[31] = 0x80;
    CHECK(xet_chunk_dedup_eligible(&h));
    h.b[24] = 1;
    CHECK(!xet_chunk_dedup_eligible(&h));
}

/* The index stays bounded: past XET_INDEX_CHUNKS_MAX chunks, trimming forgets the oldest
 * xorbs and keeps the newest; a lookup finds the xorb and the chunk's place in it. */
static void test_index_trim(void)
{
    struct hub *hub = new_hub(HUB_TRANSFER_XET);
    struct xet_session *s;
    REQUIRE(xet_session_new(&s, &loop, hub, NULL) == 0);
    const size_t per = 8192, n_xorbs = XET_INDEX_CHUNKS_MAX / per + 8;
    struct xet_hash *chunks = calloc(per, sizeof(*chunks));
    REQUIRE(chunks != NULL);
    for (size_t x = 0; x < n_xorbs; x++) {
        struct xet_hash xh = {{0}};
        memcpy(xh.b, &x, sizeof(x));
        xh.b[31] = 0xee;
        for (size_t i = 0; i < per; i++) {
            uint64_t v = x * per + i;
            memcpy(chunks[i].b, &v, sizeof(v));
            memcpy(chunks[i].b + 8, &v, sizeof(v)); /* spread the slot bits */
            chunks[i].b[8] ^= 0x5a;
        }
        CHECK(xet_session_add_xorb(s, &xh, chunks, per) == (int)x + 1);
    }
    struct xet_hash probe = {{0}}, found;
    uint32_t idx;
    uint64_t v = 5 * per + 17; /* xorb 5, chunk 17 */
    memcpy(probe.b, &v, sizeof(v));
    memcpy(probe.b + 8, &v, sizeof(v));
    probe.b[8] ^= 0x5a;
    CHECK(xet_session_find_chunk(s, &probe, &found, &idx) && idx == 17 && found.b[0] == 5);
    xet_session_trim(s);
    struct xet_session_stats st;
    xet_session_get_stats(s, &st);
    CHECK(st.index_evictions == 1 && st.chunks_indexed <= XET_INDEX_CHUNKS_MAX);
    CHECK(!xet_session_find_chunk(s, &probe, &found, &idx)); /* old: forgotten */
    v = (n_xorbs - 1) * per + 3;                             /* the newest xorb's chunk 3: kept */
    memcpy(probe.b, &v, sizeof(v));
    memcpy(probe.b + 8, &v, sizeof(v));
    probe.b[8] ^= 0x5a;
    CHECK(xet_session_find_chunk(s, &probe, &found, &idx) && idx == 3);
    xet_session_trim(s); /* within the cap now: nothing more goes */
    xet_session_get_stats(s, &st);
    CHECK(st.index_evictions == 1);
    free(chunks);
    xet_session_free(s);
    hub_free(hub);
}

static void on_closed(void *ctx)
{
    *(int *)ctx = 1;
}

int main(void)
{
    char dir[512];
    test_mkdtemp(dir, sizeof(dir));
    test_echo_start(&srv, dir);
    REQUIRE(uv_loop_init(&loop) == 0);
    struct http_opts opts = {.backoff_base_ms = 20, .backoff_cap_ms = 40, .max_attempts = 2};
    REQUIRE(http_init(&http, &loop, &opts) == 0);
    test_dedup_eligibility();
    test_index_trim();
    test_batch_offers_and_answers();
    test_cas_requests();
    int closed = 0;
    http_close(http, on_closed, &closed);
    test_run_until(&loop, &closed);
    test_close_loop(&loop);
    test_hub_stop(&srv);
    test_rm_rf(dir);
    return check_report("test_xet_session");
}
