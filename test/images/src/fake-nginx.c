/* nginx stand-in for critest (not real nginx). What the specs check:
 *  - HTTP 200 for "/" on port 80 (FAKE_NGINX_PORT overrides, e.g. 12003 for
 *    hostnet-nginx), served from /usr/share/nginx/html/index.html;
 *  - a process named "nginx" whose pid is in /var/run/nginx.pid (HostPID spec);
 *  - /proc/1/cmdline containing "master process" (ContainerPID spec): we re-exec
 *    our own binary by its real path (so comm stays "nginx") with nginx's title
 *    as argv[0];
 *  - exits 0 on SIGTERM/SIGINT/SIGQUIT (nginx's stop signal is QUIT). */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#define TITLE "nginx: master process nginx -g daemon off;"
#define INDEX "/usr/share/nginx/html/index.html"

static void on_term(int sig) { (void)sig; _exit(0); }

static int listen_on(int port) {
	int one = 1, zero = 0, fd;
	struct sockaddr_in6 a6 = {.sin6_family = AF_INET6, .sin6_port = htons(port), .sin6_addr = IN6ADDR_ANY_INIT};
	struct sockaddr_in a4 = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_ANY)};

	/* Dual-stack if the namespace has IPv6, plain IPv4 otherwise. */
	fd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd >= 0) {
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero);
		if (bind(fd, (struct sockaddr *)&a6, sizeof a6) == 0 && listen(fd, 64) == 0)
			return fd;
		close(fd);
	}
	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	if (bind(fd, (struct sockaddr *)&a4, sizeof a4) == 0 && listen(fd, 64) == 0)
		return fd;
	close(fd);
	return -1;
}

static void serve(int c) {
	char req[4096], body[65536], hdr[256];
	size_t n = 0;
	ssize_t r;
	int f, status = 200;
	struct timeval tv = {.tv_sec = 5};

	setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	/* Read the request head so closing does not reset the connection. */
	while (n < sizeof req - 1 && (r = read(c, req + n, sizeof req - 1 - n)) > 0) {
		n += r;
		req[n] = 0;
		if (strstr(req, "\r\n\r\n"))
			break;
	}
	req[n] = 0;
	if (strncmp(req, "GET / ", 6) && strncmp(req, "GET /index.html ", 16) &&
	    strncmp(req, "HEAD / ", 7))
		status = 404;
	n = 0;
	if (status == 200 && (f = open(INDEX, O_RDONLY | O_CLOEXEC)) >= 0) {
		while (n < sizeof body && (r = read(f, body + n, sizeof body - n)) > 0)
			n += r;
		close(f);
	} else {
		status = 404;
		n = (size_t)snprintf(body, sizeof body, "404 Not Found\n");
	}
	r = snprintf(hdr, sizeof hdr,
		     "HTTP/1.1 %d %s\r\nServer: nginx\r\nContent-Type: text/html\r\n"
		     "Content-Length: %zu\r\nConnection: close\r\n\r\n",
		     status, status == 200 ? "OK" : "Not Found", n);
	if (write(c, hdr, r) == r && strncmp(req, "HEAD", 4))
		(void)!write(c, body, n);
	printf("\"%.*s\" %d\n", (int)strcspn(req, "\r\n"), req, status);
	fflush(stdout);
	close(c);
}

int main(int argc, char **argv) {
	char self[4096];
	const char *p = getenv("FAKE_NGINX_PORT");
	int port = p ? atoi(p) : 80, fd, c;
	ssize_t n;
	FILE *pf;
	struct sigaction sa = {0};

	if (argc < 1 || strcmp(argv[0], TITLE) != 0) {
		char *nargv[] = {TITLE, NULL};
		n = readlink("/proc/self/exe", self, sizeof self - 1);
		if (n > 0) {
			self[n] = 0;
			execv(self, nargv);
		}
		/* No /proc: keep going with the original title. */
	}
	sa.sa_handler = on_term;
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGQUIT, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);

	fd = listen_on(port);
	if (fd < 0) {
		fprintf(stderr, "nginx: bind to port %d failed: %s\n", port, strerror(errno));
		return 1;
	}
	if ((pf = fopen("/var/run/nginx.pid", "w"))) {
		fprintf(pf, "%d\n", (int)getpid());
		fclose(pf);
	}
	fprintf(stderr, "nginx stand-in listening on port %d\n", port);
	for (;;) {
		c = accept4(fd, NULL, NULL, SOCK_CLOEXEC);
		if (c >= 0)
			serve(c);
	}
}
