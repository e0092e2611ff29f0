/*
 * vsock-guest: a tiny static program for the e2e tier, run inside a Linux
 * guest.  "connect PORT MSG" connects to the host (CID 2) on PORT, sends
 * MSG, half-closes and prints the reply as "GOT:<reply>".  "listen PORT"
 * accepts one connection, reads until EOF or a newline and answers
 * "echo:<what it read>".
 */
#include <sys/socket.h>

#include <linux/vm_sockets.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int
fail(const char *what)
{
	perror(what);
	return 1;
}

/* Read until EOF, a newline, or the buffer is full. */
static size_t
read_some(int fd, char *buf, size_t len)
{
	size_t	got = 0;
	ssize_t	n;

	while (got < len - 1 && (n = read(fd, buf + got, len - 1 - got)) > 0) {
		got += n;
		if (memchr(buf, '\n', got) != NULL)
			break;
	}
	buf[got] = '\0';
	buf[strcspn(buf, "\n")] = '\0';
	return got;
}

int
main(int argc, char **argv)
{
	struct sockaddr_vm	sa;
	char			buf[4096], out[4200];
	int			fd, c;

	if (argc < 3)
		return fprintf(stderr, "usage: vsock-guest connect PORT MSG | "
		    "listen PORT\n"), 2;
	memset(&sa, 0, sizeof sa);
	sa.svm_family = AF_VSOCK;
	sa.svm_port = (unsigned)atoi(argv[2]);
	if ((fd = socket(AF_VSOCK, SOCK_STREAM, 0)) == -1)
		return fail("socket");
	if (strcmp(argv[1], "connect") == 0 && argc == 4) {
		sa.svm_cid = VMADDR_CID_HOST;
		if (connect(fd, (struct sockaddr *)&sa, sizeof sa) == -1)
			return fail("connect");
		if (write(fd, argv[3], strlen(argv[3])) == -1 ||
		    write(fd, "\n", 1) == -1)
			return fail("write");
		shutdown(fd, SHUT_WR);
		read_some(fd, buf, sizeof buf);
		printf("GOT:%s\n", buf);
		return 0;
	}
	if (strcmp(argv[1], "listen") == 0) {
		sa.svm_cid = VMADDR_CID_ANY;
		if (bind(fd, (struct sockaddr *)&sa, sizeof sa) == -1 ||
		    listen(fd, 1) == -1)
			return fail("listen");
		printf("LISTENING %s\n", argv[2]);
		fflush(stdout);
		if ((c = accept(fd, NULL, NULL)) == -1)
			return fail("accept");
		read_some(c, buf, sizeof buf);
		snprintf(out, sizeof out, "echo:%s\n", buf);
		if (write(c, out, strlen(out)) == -1)
			return fail("write");
		close(c);
		printf("SERVED %s\n", buf);
		return 0;
	}
	return fprintf(stderr, "vsock-guest: unknown mode %s\n", argv[1]), 2;
}
