#!/bin/sh
# ipcs stand-in: Debian's busybox has no ipcs applet. Only -m (shared memory),
# read from /proc/sysvipc/shm of the caller's IPC namespace, in util-linux layout.
case ${1:--m} in
-m) ;;
*) echo "ipcs: only -m is supported (busybox image stand-in)" >&2; exit 1 ;;
esac
echo
echo "------ Shared Memory Segments --------"
printf '%-10s %-10s %-10s %-10s %-10s %-10s\n' key shmid owner perms bytes nattch
tail -n +2 /proc/sysvipc/shm 2>/dev/null |
while read -r key shmid perms size cpid lpid nattch uid rest; do
	printf '0x%08x %-10s %-10s %-10s %-10s %-10s\n' "$key" "$shmid" "$uid" "$perms" "$size" "$nattch"
done
