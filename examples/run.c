/*
 * run: the smallest complete use of libsmx.  Opens an image (pulling it
 * when missing), boots a microVM from it, runs one command inside,
 * prints what it wrote and stops the machine.
 *
 *	usage: run IMAGE [COMMAND [ARG...]]
 *
 * Without COMMAND the image's own Entrypoint and Cmd run.  Exits with
 * the command's status (128 + N when signal N killed it), or 125 when
 * the machine could not be started.
 */
#include <stdio.h>
#include <string.h>

#include <smx.h>

int
main(int argc, char **argv)
{
	struct smx		*smx;
	struct smx_image	*img;
	struct smx_vm		*vm;
	struct smx_image_opts	 io;
	struct smx_vm_opts	 vo;
	struct smx_exec_opts	 eo;
	struct smx_exec_result	 res;
	char			 err[512];
	int			 status = 125;

	if (argc < 2) {
		fprintf(stderr, "usage: run IMAGE [COMMAND [ARG...]]\n");
		return 2;
	}
	if (smx_open(&smx, SMX_OPEN_SIGNALS) != 0) {
		fprintf(stderr, "run: cannot create the runtime\n");
		return 125;
	}

	/* The image: from the store, pulled when missing. */
	smx_image_opts_init(&io);
	if (smx_image_open(smx, argv[1], &io, &img, err, sizeof err) != 0) {
		fprintf(stderr, "run: %s\n", err);
		goto out_close;
	}

	/* A machine from it; returns once the guest agent is ready.  The
	 * image root is mapped with DAX: guest reads go straight to the
	 * host's page cache. */
	smx_vm_opts_init(&vo);
	vo.dax = 1;
	if (smx_vm_start(smx, img, &vo, &vm, err, sizeof err) != 0) {
		fprintf(stderr, "run: %s\n", err);
		goto out_image;
	}

	/* The command, its output captured (stdout_fd/stderr_fd stay -1). */
	smx_exec_opts_init(&eo);
	if (argc > 2)
		eo.argv = (const char *const *)&argv[2];
	if (smx_exec(vm, &eo, &res, err, sizeof err) != 0)
		fprintf(stderr, "run: %s\n", err);
	else {
		fwrite(res.out, 1, res.out_len, stdout);
		fwrite(res.err, 1, res.err_len, stderr);
		status = res.status;
		smx_exec_result_free(&res);
	}

	/* Power the guest off and wait for the end. */
	smx_vm_shutdown(vm, 0);
	smx_vm_free(vm);
out_image:
	smx_image_close(img);
out_close:
	smx_close(smx);
	return status;
}
