/* test_bucket.c - the bucket batch body (NDJSON, as the JS client sends it) and the reading of
 * its answer: success, a deleteFile of a path already gone, a real failure, and garbage. */
#include "bucket.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "check.h"

static const struct bucket_op ops[] = {
    {BUCKET_ADD, "checkpoint-20/model.safetensors",
     "a6d69d86c6c131da3217ac45aa294d0afd05f7a4509a2bc4bb3eca75f208dc8f"},
    {BUCKET_ADD, "checkpoint-20/cfg \"q\".json",
     "2020f981f125c1e83e06f63ebe8ac4e6fe942fbe24817228cd4311a7a9d4e9be"},
    {BUCKET_DELETE, "checkpoint-10/model.safetensors", NULL},
};
#define N_OPS (sizeof(ops) / sizeof(ops[0]))

static void test_body(void)
{
    char *body;
    size_t len;

    CHECK_INT(bucket_batch_body(ops, N_OPS, &body, &len), 0);
    CHECK_STR(body,
              "{\"type\":\"addFile\",\"path\":\"checkpoint-20/model.safetensors\","
              "\"xetHash\":\"a6d69d86c6c131da3217ac45aa294d0afd05f7a4509a2bc4bb3eca75f208dc8f\"}\n"
              "{\"type\":\"addFile\",\"path\":\"checkpoint-20/cfg \\\"q\\\".json\","
              "\"xetHash\":\"2020f981f125c1e83e06f63ebe8ac4e6fe942fbe24817228cd4311a7a9d4e9be\"}\n"
              "{\"type\":\"deleteFile\",\"path\":\"checkpoint-10/model.safetensors\"}\n");
    CHECK_INT((long)len, (long)strlen(body));
    free(body);
    CHECK_INT(bucket_batch_body(ops, 0, &body, &len), UV_EINVAL);
    CHECK(body == NULL);
}

static int check(long status, const char *answer, struct ckpt_err *err)
{
    ckpt_err_clear(err);
    return bucket_batch_check("alice/b", status, answer, answer ? strlen(answer) : 0, ops, N_OPS,
                              err);
}

static void test_answers(void)
{
    struct ckpt_err err;

    CHECK_INT(check(200, "{\"success\":true,\"processed\":3,\"succeeded\":3,\"failed\":[]}", &err),
              0);
    CHECK_INT(check(200, "{\"success\":true}", &err), 0); /* no list: nothing failed */
    /* a re-sent batch after a restart: the delete found nothing, which is what it wanted */
    CHECK_INT(
        check(422,
              "{\"success\":false,\"processed\":3,\"succeeded\":2,\"failed\":"
              "[{\"path\":\"checkpoint-10/model.safetensors\",\"error\":\"file not found\"}]}",
              &err),
        0);
    /* an add that failed fails the batch, naming the path and the Hub's reason */
    CHECK(check(422,
                "{\"success\":false,\"failed\":[{\"path\":\"checkpoint-20/model.safetensors\","
                "\"error\":\"xet hash a6d6 not found in CAS\"}]}",
                &err) < 0);
    CHECK_INT(err.kind, CKPT_ERR_REJECTED);
    CHECK(strstr(err.msg, "bucket batch to 'alice/b': addFile 'checkpoint-20/model.safetensors' "
                          "failed: xet hash a6d6 not found in CAS") != NULL);
    /* a delete that failed for another reason is a failure too */
    CHECK(
        check(422,
              "{\"failed\":[{\"path\":\"checkpoint-10/model.safetensors\",\"error\":\"locked\"}]}",
              &err) < 0);
    CHECK(strstr(err.msg, "deleteFile 'checkpoint-10/model.safetensors' failed: locked") != NULL);
    /* garbage: not JSON, the wrong types, a path we never sent, a 422 without a list */
    const char *garbage[] = {NULL,
                             "",
                             "[]",
                             "not json",
                             "{\"failed\":{}}",
                             "{\"failed\":[{\"path\":\"elsewhere\",\"error\":\"x\"}]}",
                             "{\"failed\":[{\"path\":7}]}",
                             "{\"failed\":[7]}"};
    for (size_t i = 0; i < sizeof(garbage) / sizeof(garbage[0]); i++) {
        CHECK(check(200, garbage[i], &err) < 0);
        CHECK_INT(err.kind, CKPT_ERR_PROTOCOL);
        CHECK(strstr(err.msg, "bucket batch to 'alice/b': bad answer") != NULL);
    }
    CHECK(check(422, "{\"success\":false}", &err) < 0);
    CHECK_INT(err.kind, CKPT_ERR_PROTOCOL);
}

int main(void)
{
    test_body();
    test_answers();
    return check_report("test_bucket");
}
