#!/bin/sh
# pgrep stand-in: Debian's busybox has no pgrep applet. Supports [-f] [-l]
# PATTERN (extended regex, matched against the process name, or with -f the
# full command line); prints matching pids, exits 1 when none match.
usage() { echo "Usage: pgrep [-f] [-l] PATTERN (busybox image stand-in)"; }
full= long=
while [ $# -gt 0 ]; do
	case $1 in
	-f) full=1 ;;
	-l) long=1 ;;
	-fl|-lf) full=1 long=1 ;;
	-h|--help) usage; exit 0 ;;
	--) shift; break ;;
	-*) echo "pgrep: unsupported option $1" >&2; usage >&2; exit 2 ;;
	*) break ;;
	esac
	shift
done
[ $# -eq 1 ] || { usage >&2; exit 2; }
rc=1
for d in /proc/[0-9]*; do
	pid=${d#/proc/}
	[ "$pid" = "$$" ] && continue
	read -r comm < "$d/comm" 2>/dev/null || continue
	if [ -n "$full" ]; then
		s=$(tr '\0' ' ' < "$d/cmdline" 2>/dev/null) || continue
		[ -n "$s" ] || s=$comm
	else
		s=$comm
	fi
	if echo "$s" | grep -qE -- "$1"; then
		rc=0
		if [ -n "$long" ]; then echo "$pid $comm"; else echo "$pid"; fi
	fi
done
exit $rc
