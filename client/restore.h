/* restore.h - `ckptpush restore`: bring the newest complete checkpoint of a Hub repo back into a
 * training output directory as checkpoint-<step>/, verified and resumable, so that a requeued job
 * can resume_from_checkpoint. Blocking libcurl; no daemon needed.
 */
#ifndef CKPT_RESTORE_H
#define CKPT_RESTORE_H

/* argv: the command's own arguments (after `restore`). usage: the command's usage line, printed
 * after a usage error. Returns an exit code of ipc_proto.h. */
int restore_command(int argc, char **argv, const char *usage);

#endif
