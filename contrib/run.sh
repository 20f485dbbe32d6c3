#!/usr/bin/env bash
# Starts or stops the installed ketchd for `make run` / `make stop`. Under systemd the
# unit does it; elsewhere ketchd runs in the background and is stopped by its recorded PID.
set -euo pipefail
pidfile=/run/ketch/ketchd.pid
socket=/run/ketch/ketch.sock
log=/var/log/ketchd.log
here=$(cd "$(dirname "$0")" && pwd)

running() { [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }

stop() {
  if [ -d /run/systemd/system ]; then systemctl stop ketchd 2>/dev/null || true; fi
  if running; then
    pid=$(cat "$pidfile")
    kill -TERM "$pid"
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  fi
  rm -f "$pidfile"
  # ketchd makes its netns directory a shared mount (as `ip netns` does /run/netns);
  # with no pod's netns pinned in it, nothing needs it any more.
  if [ -d /run/ketch/netns ] && [ -z "$(ls -A /run/ketch/netns)" ]; then
    umount /run/ketch/netns 2>/dev/null || true
  fi
  # Likewise the default cgroup parent of pods that named none, once empty
  # (rmdir refuses a cgroup that still has children).
  rmdir /sys/fs/cgroup/*/ketch /sys/fs/cgroup/ketch 2>/dev/null || true
}

start() {
  # What this node lacks, before anything is started on it: warnings are
  # printed and run goes on, a failed check stops it.
  /usr/local/bin/ketchd --config /etc/ketch/config.toml check || { echo "ketchd check failed: ketch cannot run here as configured" >&2; exit 1; }
  if [ -d /run/systemd/system ]; then
    install -m 0644 "$here/ketchd.service" /etc/systemd/system/ketchd.service
    systemctl daemon-reload
    systemctl enable --now ketchd
    systemctl restart ketchd
  else
    stop
    mkdir -p /run/ketch
    nohup /usr/local/bin/ketchd --config /etc/ketch/config.toml >>"$log" 2>&1 &
    echo $! >"$pidfile"
  fi
  for _ in $(seq 100); do
    [ -S "$socket" ] && { echo "ketchd is serving on unix://$socket (log: ${log})"; return 0; }
    sleep 0.1
  done
  echo "ketchd did not start; see $log" >&2
  tail -20 "$log" >&2 || true
  exit 1
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
