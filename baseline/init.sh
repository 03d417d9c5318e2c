#!/bin/sh
# Baseline init, the way a microVM was brought up before chinit: a busybox shell script that mounts
# what chinit mounts, configures the same link-local address with busybox `ip`, then execs a Python
# HTTP agent that serves the same GET /ready. Used only to compare against chinit
# (docs/benchmarks.md).
#
#   as the kernel's init:       reads /proc/cmdline, mode "vm"
#   as PID 1 of namespaces:     busybox sh init.sh --cmdline "chinit.ip=169.254.1.2/16 ...", mode "namespace"
#
# Keys understood (same meaning as chinit's): chinit.ip=A.B.C.D/P, chinit.iface=NAME, chinit.port=N.
# Without chinit.ip the address comes from the MAC, as chinit does it: 169.254.mac[4].mac[5]/16
# (a mac[4] of 0 or 255 becomes 1 + mac[3] % 254).
# Times are $EPOCHREALTIME stamps (a shell variable: no fork); the agent turns them into
# CLOCK_BOOTTIME microseconds for its ready document.

t_start=$EPOCHREALTIME
mode=vm
if [ "$1" = --cmdline ]; then
	mode=namespace
	cmdline=$2
fi
# Open the agent now: the mounts below may cover the directory it lives in (a checkout under /tmp).
exec 3<"${BASELINE_AGENT:-${0%/*}/agent.py}"

# Mounts: what chinit mounts before ready. A target the kernel already mounted (devtmpfs) is fine.
mkdir -p /proc /sys /dev
# busybox runs its applets through /proc/self/exe: the first mount names busybox itself.
/bin/busybox mount -t proc -o nosuid,nodev,noexec proc /proc
mount -t sysfs -o nosuid,nodev,noexec sysfs /sys
mount -t devtmpfs -o nosuid,mode=0755 devtmpfs /dev 2>/dev/null
t_mounts=$EPOCHREALTIME

# Configuration from the kernel command line (or --cmdline).
[ "$mode" = vm ] && read -r cmdline </proc/cmdline
ip_addr= iface= port=1024
set -f # split the words, never glob them
for word in $cmdline; do
	case $word in
	chinit.ip=*) ip_addr=${word#chinit.ip=} ;;
	chinit.iface=*) iface=${word#chinit.iface=} ;;
	chinit.port=*) port=${word#chinit.port=} ;;
	esac
done
set +f
t_cmdline=$EPOCHREALTIME

# Network: lo up; the first ethernet link up with its link-local address.
ip link set lo up
if [ -z "$iface" ]; then
	for d in /sys/class/net/*; do
		name=${d##*/}
		[ "$name" = lo ] && continue
		read -r type <"$d/type"
		if [ "$type" = 1 ]; then iface=$name; break; fi
	done
fi
if [ -n "$iface" ]; then
	if [ -z "$ip_addr" ]; then
		read -r mac </sys/class/net/"$iface"/address
		IFS=:
		set -- $mac
		unset IFS
		a=$((0x$5)) b=$((0x$6))
		if [ "$a" = 0 ] || [ "$a" = 255 ]; then a=$((1 + 0x$4 % 254)); fi
		ip_addr=169.254.$a.$b/16
	fi
	ip addr add "$ip_addr" dev "$iface"
	ip link set "$iface" up
else
	echo "baseline: no ethernet link; the agent listens on loopback only"
	ip_addr=127.0.0.1/8
fi
t_network=$EPOCHREALTIME

# The rest of chinit's mounts (chinit does these right after ready, on a helper thread).
(
	mkdir -p /dev/pts /dev/shm /run /tmp /sys/fs/cgroup
	mount -t devpts -o nosuid,noexec,mode=0620,ptmxmode=0666 devpts /dev/pts
	mount -t tmpfs -o nosuid,nodev,mode=1777 shm /dev/shm
	mount -t tmpfs -o nosuid,nodev,mode=0755 run /run
	mount -t tmpfs -o nosuid,nodev,mode=1777 tmp /tmp
	mount -t cgroup2 -o nosuid,nodev,noexec cgroup2 /sys/fs/cgroup
) 2>/dev/null &

export BASELINE_MODE=$mode BASELINE_IP=$ip_addr BASELINE_PORT=$port
export BASELINE_STAMPS="start=$t_start mounts=$t_mounts cmdline=$t_cmdline network=$t_network"
exec python3 /proc/self/fd/3
