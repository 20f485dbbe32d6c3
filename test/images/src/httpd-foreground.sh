#!/bin/sh
# httpd stand-in for registry.k8s.io/e2e-test-images/httpd:2.4.39-4: prints
# the log line real httpd prints at start, then serves /usr/local/apache2/htdocs
# with busybox httpd on :80. Stays in the foreground and exits 0 on TERM/INT
# (busybox httpd as PID 1 would ignore TERM).
echo "[mpm_event:notice] [pid $$:tid 1] AH00489: Apache/2.4.39 (Unix) configured -- resuming normal operations"
echo "[core:notice] [pid $$:tid 1] AH00094: Command line: 'httpd -D FOREGROUND'"
httpd -f -p 80 -h /usr/local/apache2/htdocs &
pid=$!
trap 'kill $pid 2>/dev/null; exit 0' TERM INT
wait $pid
