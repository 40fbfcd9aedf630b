/* test_strategy.c - every_save maps Trainer checkpoints, single files and the output root;
 * --keep-last retires only this job's checkpoint-<n> folders beyond the newest K. */
#include "strategy.h"

#include "check.h"

static void test_trainer_checkpoint(void)
{
    const char *files[] = {"config.json",      "generation_config.json", "model.safetensors",
                           "optimizer.pt",     "rng_state.pth",          "scheduler.pt",
                           "tokenizer.json",   "tokenizer_config.json",  "trainer_state.json",
                           "training_args.bin"};
    struct strategy_plan plan;

    CHECK_INT(strategy_plan(STRATEGY_EVERY_SAVE, "transformers-trainer", "checkpoint-10", 10, files,
                            10, &plan),
              0);
    CHECK_STR(plan.message, "Training in progress, step 10");
    CHECK_INT(plan.count, 6);
    for (size_t i = 0; i < plan.count; i++) {
        CHECK_STR(plan.items[i].path_in_repo, plan.items[i].file);
        CHECK(strcmp(plan.items[i].file, "optimizer.pt") != 0);
        CHECK(strcmp(plan.items[i].file, "trainer_state.json") != 0);
    }
    strategy_plan_release(&plan);
}

/* PEFT adapter-only (trainer.py _push_from_checkpoint copies ADAPTER_* to the root) and
 * save_only_model checkpoints: adapter files at the root, no optimizer state, no checkpoint card;
 * the card still goes with the whole checkpoint under last-checkpoint/. */
static void test_trainer_variants(void)
{
    const char *peft[] = {"README.md",        "adapter_config.json",   "adapter_model.safetensors",
                          "optimizer.pt",     "rng_state.pth",         "scheduler.pt",
                          "tokenizer.json",   "tokenizer_config.json", "trainer_state.json",
                          "training_args.bin"};
    const char *only[] = {"config.json",      "generation_config.json", "model.safetensors",
                          "tokenizer.json",   "tokenizer_config.json",  "trainer_state.json",
                          "training_args.bin"};
    struct strategy_plan plan;

    CHECK_INT(strategy_plan(STRATEGY_EVERY_SAVE, "transformers-trainer", "checkpoint-50", 50, peft,
                            10, &plan),
              0);
    CHECK_INT(plan.count, 5);
    CHECK_STR(plan.items[0].path_in_repo, "adapter_config.json");
    CHECK_STR(plan.items[1].path_in_repo, "adapter_model.safetensors");
    CHECK_STR(plan.items[2].path_in_repo, "tokenizer.json");
    CHECK_STR(plan.items[3].path_in_repo, "tokenizer_config.json");
    CHECK_STR(plan.items[4].path_in_repo, "training_args.bin");
    strategy_plan_release(&plan);

    CHECK_INT(strategy_plan(STRATEGY_CHECKPOINT, "transformers-trainer", "checkpoint-50", 50, peft,
                            10, &plan),
              0);
    CHECK_INT(plan.count, 15);
    CHECK_STR(plan.items[5].path_in_repo, "last-checkpoint/README.md");
    CHECK_STR(plan.items[8].path_in_repo, "last-checkpoint/optimizer.pt");
    strategy_plan_release(&plan);

    CHECK_INT(strategy_plan(STRATEGY_EVERY_SAVE, "transformers-trainer", "checkpoint-30", 30, only,
                            7, &plan),
              0);
    CHECK_INT(plan.count, 6);
    for (size_t i = 0; i < plan.count; i++)
        CHECK(strcmp(plan.items[i].file, "trainer_state.json") != 0);
    strategy_plan_release(&plan);
}

static void test_single_file_and_root(void)
{
    const char *single[] = {"step_300.pt"};
    const char *root[] = {"config.json", "model.safetensors", "trainer_state.json"};
    struct strategy_plan plan;

    CHECK_INT(strategy_plan(STRATEGY_EVERY_SAVE, "single-file", "ckpts/step_300.pt", 300, single, 1,
                            &plan),
              0);
    CHECK_INT(plan.count, 1);
    CHECK_STR(plan.items[0].path_in_repo, "ckpts/step_300.pt");
    CHECK_STR(plan.message, "Training in progress, step 300");
    strategy_plan_release(&plan);

    CHECK_INT(strategy_plan(STRATEGY_EVERY_SAVE, "single-file", "last.ckpt", -1, single, 1, &plan),
              0);
    CHECK_STR(plan.message, "Add checkpoint last.ckpt");
    strategy_plan_release(&plan);

    /* The end of training keeps trainer_state.json: the card and resumption read it. */
    CHECK_INT(strategy_plan(STRATEGY_EVERY_SAVE, "model-root", "", -1, root, 3, &plan), 0);
    CHECK_INT(plan.count, 3);
    CHECK_STR(plan.message, "End of training");
    strategy_plan_release(&plan);
}

/* A model folder or a DCP folder goes under its own name; DCP's hidden .metadata with it. */
static void test_folders(void)
{
    const char *dcp[] = {".metadata", "__0_0.distcp"};
    const char *model[] = {"config.json", "model-00001-of-00002.safetensors",
                           "model-00002-of-00002.safetensors", "model.safetensors.index.json"};
    struct strategy_plan plan;

    CHECK_INT(strategy_plan(STRATEGY_EVERY_SAVE, "torch-dcp", "step-100", 100, dcp, 2, &plan), 0);
    CHECK_INT(plan.count, 2);
    CHECK_STR(plan.items[0].path_in_repo, "step-100/.metadata");
    CHECK_STR(plan.items[1].path_in_repo, "step-100/__0_0.distcp");
    CHECK_STR(plan.message, "Training in progress, step 100");
    strategy_plan_release(&plan);

    CHECK_INT(strategy_plan(STRATEGY_EVERY_SAVE, "model-dir", "out", -1, model, 4, &plan), 0);
    CHECK_INT(plan.count, 4);
    CHECK_STR(plan.items[3].path_in_repo, "out/model.safetensors.index.json");
    CHECK_STR(plan.message, "Add checkpoint out");
    strategy_plan_release(&plan);
}

/* checkpoint / all_checkpoints add the whole checkpoint under last-checkpoint/ or its name; end
 * pushes nothing during training; include/exclude globs work on repo paths. */
static void test_other_strategies(void)
{
    const char *files[] = {"config.json", "model.safetensors", "optimizer.pt",
                           "trainer_state.json"};
    const char *root[] = {"config.json", "model.safetensors", "_private.txt"};
    struct strategy_plan plan;

    CHECK_INT(strategy_plan(STRATEGY_CHECKPOINT, "transformers-trainer", "checkpoint-5", 5, files,
                            4, &plan),
              0);
    CHECK_INT(plan.count, 6);
    CHECK_STR(plan.items[0].path_in_repo, "config.json");
    CHECK_STR(plan.items[2].path_in_repo, "last-checkpoint/config.json");
    CHECK_STR(plan.items[5].path_in_repo, "last-checkpoint/trainer_state.json");
    CHECK_STR(plan.message, "Training in progress, step 5");
    char *include[] = {"*.json", "last-checkpoint/*", NULL};
    char *exclude[] = {"*/optimizer.pt", NULL};
    CHECK_INT(strategy_filter(&plan, include, exclude), 2); /* model.safetensors, optimizer.pt */
    CHECK_INT(plan.count, 4);
    CHECK_STR(plan.items[1].path_in_repo, "last-checkpoint/config.json");
    strategy_plan_release(&plan);

    CHECK_INT(strategy_plan(STRATEGY_ALL_CHECKPOINTS, "transformers-trainer", "checkpoint-5", 5,
                            files, 4, &plan),
              0);
    CHECK_INT(plan.count, 6);
    CHECK_STR(plan.items[3].path_in_repo, "checkpoint-5/model.safetensors");
    strategy_plan_release(&plan);

    CHECK_INT(
        strategy_plan(STRATEGY_END, "transformers-trainer", "checkpoint-5", 5, files, 4, &plan), 0);
    CHECK_INT(plan.count, 0);
    strategy_plan_release(&plan);
    CHECK_INT(strategy_plan(STRATEGY_END, "model-root", "", -1, root, 3, &plan), 0);
    CHECK_INT(plan.count, 2); /* "_*" is never pushed from the root, as transformers does */
    CHECK_STR(plan.message, "End of training");
    strategy_plan_release(&plan);
}

static void test_checkpoint_number(void)
{
    unsigned long long n = 0;

    CHECK(strategy_checkpoint_number("checkpoint-500", &n));
    CHECK_INT(n, 500);
    CHECK(!strategy_checkpoint_number("checkpoint-", &n));
    CHECK(!strategy_checkpoint_number("checkpoint-5a", &n));
    CHECK(!strategy_checkpoint_number("checkpoint--5", &n));
    CHECK(!strategy_checkpoint_number("last-checkpoint", &n));
    CHECK(!strategy_checkpoint_number("run/checkpoint-5", &n));
    CHECK(!strategy_checkpoint_number("checkpoint-99999999999999999999999", &n));
}

static void test_retire(void)
{
    const char *names[] = {"checkpoint-10", "checkpoint-20", "notes",       "checkpoint-30",
                           "checkpoint-20", "checkpoint-x",  "checkpoint-5"};
    enum strategy_retirement m[7];

    /* newest 2 of {10, 20, 30, 40, 5}: 40 (current) and 30; 20 goes now, 10 and 5 were beyond
     * the newest 2 already */
    CHECK_INT(strategy_retire("checkpoint-40", names, 7, 2, m), 4);
    CHECK(m[0] == STRATEGY_RETIRE_AGAIN && m[6] == STRATEGY_RETIRE_AGAIN);
    CHECK(m[1] == STRATEGY_RETIRE_NOW && m[4] == STRATEGY_RETIRE_NOW);
    CHECK(m[2] == STRATEGY_KEEP && m[3] == STRATEGY_KEEP && m[5] == STRATEGY_KEEP);
    /* numbers, not names: checkpoint-5 is older than checkpoint-10 */
    CHECK_INT(strategy_retire("checkpoint-40", names, 7, 4, m), 1);
    CHECK(m[6] == STRATEGY_RETIRE_NOW);
    /* as many as kept or fewer: nothing goes; 0 keeps all */
    CHECK_INT(strategy_retire("checkpoint-40", names, 7, 5, m), 0);
    CHECK_INT(strategy_retire("checkpoint-40", names, 7, 0, m), 0);
    CHECK(m[0] == STRATEGY_KEEP && m[6] == STRATEGY_KEEP);
    /* a current outside the pattern retires nothing; the current itself never goes, also when
     * a newer one was committed before it (training resumed from an older step) */
    CHECK_INT(strategy_retire("final", names, 7, 1, m), 0);
    CHECK_INT(strategy_retire("checkpoint-20", names, 7, 1, m), 2);
    CHECK(m[0] == STRATEGY_RETIRE_AGAIN && m[6] == STRATEGY_RETIRE_AGAIN);
    CHECK(m[1] == STRATEGY_KEEP && m[4] == STRATEGY_KEEP && m[3] == STRATEGY_KEEP);
    CHECK_INT(strategy_retire("checkpoint-1", NULL, 0, 1, m), 0);
}

/* Lightning: one save is its epoch file and last.ckpt, each at its place in the tree, titled with
 * the epoch and step the file name carries. */
static void test_lightning(void)
{
    const char *save[] = {"epoch=3-step=400.ckpt", "last.ckpt"};
    const char *last[] = {"last.ckpt"};
    const enum config_strategy all[] = {STRATEGY_EVERY_SAVE, STRATEGY_CHECKPOINT,
                                        STRATEGY_ALL_CHECKPOINTS};
    struct strategy_plan plan;

    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++) {
        CHECK_INT(strategy_plan(all[i], "lightning",
                                "lightning_logs/version_0/checkpoints/"
                                "epoch=3-step=400.ckpt",
                                400, save, 2, &plan),
                  0);
        CHECK_INT(plan.count, 2);
        CHECK_STR(plan.items[0].path_in_repo,
                  "lightning_logs/version_0/checkpoints/epoch=3-step=400.ckpt");
        CHECK_STR(plan.items[1].path_in_repo, "lightning_logs/version_0/checkpoints/last.ckpt");
        CHECK_STR(plan.items[1].file, "last.ckpt");
        CHECK_STR(plan.message, "Training in progress, epoch 3, step 400");
        strategy_plan_release(&plan);
    }
    /* at the root; a name with a step and no epoch; a lone last.ckpt (no step known) */
    CHECK_INT(strategy_plan(STRATEGY_EVERY_SAVE, "lightning", "step=7.ckpt", 7, save, 1, &plan), 0);
    CHECK_STR(plan.items[0].path_in_repo, "epoch=3-step=400.ckpt");
    CHECK_STR(plan.message, "Training in progress, step 7");
    strategy_plan_release(&plan);
    CHECK_INT(strategy_plan(STRATEGY_EVERY_SAVE, "lightning", "ck/last.ckpt", -1, last, 1, &plan),
              0);
    CHECK_STR(plan.items[0].path_in_repo, "ck/last.ckpt");
    CHECK_STR(plan.message, "Add checkpoint ck/last.ckpt");
    strategy_plan_release(&plan);
    CHECK_INT(strategy_plan(STRATEGY_END, "lightning", "ck/last.ckpt", -1, last, 1, &plan), 0);
    CHECK_INT(plan.count, 0);
    strategy_plan_release(&plan);
}

int main(void)
{
    test_checkpoint_number();
    test_retire();
    test_other_strategies();
    test_folders();
    test_lightning();
    test_trainer_checkpoint();
    test_trainer_variants();
    test_single_file_and_root();
    return check_report("test_strategy");
}
