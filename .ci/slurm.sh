#!/usr/bin/env bash
# Start a throwaway single-node SLURM cluster on loopback for the test suite.
#
# Usage (CI):  eval "$(.ci/slurm.sh)"          and on exit:  .ci/slurm.sh stop
# Prints ONE line on stdout:
#   export SLURM_CONF=DIR/slurm.conf OMICSTWIN_TEST_SLURM=1 OMICSTWIN_TEST_SLURM_DIR=DIR
# SLURM_CONF points every SLURM command (sinfo, srun, sbatch, scancel: what dask-jobqueue runs)
# at this cluster; nothing is written to /etc. Everything else goes to stderr.
# `.ci/slurm.sh stop` (with OMICSTWIN_TEST_SLURM_DIR set) cancels the jobs, stops the daemons
# started here (by their pid files) and removes DIR.
#
# What runs: a private munged (own key and socket in DIR), slurmctld and slurmd as root, one
# node "localhost" at 127.0.0.1 with the machine's CPUs and memory, one partition "debug", on
# two free ports. No cgroups (containers rarely have them): proctrack/linuxproc, task/none,
# no accounting. Installs Debian's slurmctld, slurmd, slurm-client and munge when missing.
set -euo pipefail

if [ "${1:-}" = "stop" ]; then
  DIR="${OMICSTWIN_TEST_SLURM_DIR:?slurm.sh stop: OMICSTWIN_TEST_SLURM_DIR is not set}"
  [ -f "$DIR/slurm.conf" ] || { echo "slurm.sh stop: no cluster in $DIR" >&2; exit 0; }
  # jobs first (their steps are children of slurmd), then the daemons; pids from our own files
  SLURM_CONF="$DIR/slurm.conf" scancel --quiet --user="$(id -un)" 2>/dev/null || true
  for name in slurmd slurmctld munged; do
    if [ -s "$DIR/$name.pid" ]; then kill "$(cat "$DIR/$name.pid")" 2>/dev/null || true; fi
  done
  for _ in $(seq 1 20); do
    alive=0
    for name in slurmd slurmctld munged; do
      [ -s "$DIR/$name.pid" ] && kill -0 "$(cat "$DIR/$name.pid")" 2>/dev/null && alive=1
    done
    [ "$alive" -eq 0 ] && break
    sleep 0.25
  done
  rm -rf "$DIR"
  exit 0
fi

exec 3>&1 1>&2 # keep stdout for the single export line

if [ "$(id -u)" -ne 0 ]; then
  echo "slurm.sh: must run as root (slurmd starts jobs as their users); fix: run it in CI as root"
  exit 1
fi
need=()
for cmd in slurmctld slurmd sinfo sbatch munged mungekey; do
  command -v "$cmd" >/dev/null 2>&1 || need+=("$cmd")
done
if ((${#need[@]})); then
  echo "slurm.sh: installing SLURM and munge (apt-get; missing: ${need[*]})"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # the packages' own service starts are refused in containers (policy-rc.d): we start our own
  apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge >/dev/null
fi

DIR="$(mktemp -d /tmp/omicstwin-slurm.XXXXXX)"
chmod 755 "$DIR"
# a failed start leaves nothing running: stop whatever was started, remove DIR
trap 'rc=$?; [ "$rc" -eq 0 ] || OMICSTWIN_TEST_SLURM_DIR="$DIR" "$0" stop 3>&-; exit "$rc"' EXIT
mkdir -p "$DIR/state" "$DIR/spool" "$DIR/munge"
chmod 700 "$DIR/munge"
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}
CTLD_PORT="$(free_port)"
SLURMD_PORT="$(free_port)"
while [ "$SLURMD_PORT" = "$CTLD_PORT" ]; do SLURMD_PORT="$(free_port)"; done

# munge: a key of our own, a socket in DIR (slurm.conf's AuthInfo points SLURM at it)
mungekey --create --keyfile="$DIR/munge/munge.key"
munged --force --socket="$DIR/munge/munge.socket" --key-file="$DIR/munge/munge.key" \
  --pid-file="$DIR/munged.pid" --log-file="$DIR/munged.log" --seed-file="$DIR/munge/seed" 3>&- \
  || { cat "$DIR/munged.log" 2>/dev/null; exit 1; }

# The node as slurmd sees it (CPUs, sockets, cores, memory): a node configured with more than it
# has would be drained at registration.
read -r -a HW <<<"$(slurmd -C | head -1)"
NODE_HW=()
for field in "${HW[@]}"; do
  case "$field" in
    CPUs=* | Boards=* | SocketsPerBoard=* | CoresPerSocket=* | ThreadsPerCore=* | RealMemory=*) NODE_HW+=("$field") ;;
  esac
done

cat >"$DIR/slurm.conf" <<EOF
# omicstwin CI: one node on loopback (written by .ci/slurm.sh)
ClusterName=omicstwin-ci
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$DIR/munge/munge.socket
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/slurmctld.log
SlurmdLogFile=$DIR/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# no cgroups in containers
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
SwitchType=switch/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# a job that asks for no memory gets 1 GB per CPU, not the whole node
DefMemPerCPU=1024
ReturnToService=2
MailProg=/bin/true
InactiveLimit=0
KillWait=5
MinJobAge=60
NodeName=localhost NodeAddr=127.0.0.1 NodeHostname=localhost ${NODE_HW[*]} State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
export SLURM_CONF="$DIR/slurm.conf"

# -c: no state from an earlier cluster; -N: slurmd is node "localhost" whatever the hostname
slurmctld -f "$SLURM_CONF" -c 3>&- || { cat "$DIR/slurmctld.log"; exit 1; }
slurmd -f "$SLURM_CONF" -N localhost 3>&- || { cat "$DIR/slurmd.log"; exit 1; }

state=""
for _ in $(seq 1 60); do
  state="$(sinfo --noheader --nodes=localhost --format=%t 2>/dev/null || true)"
  [ "$state" = "idle" ] && break
  sleep 0.5
done
if [ "$state" != "idle" ]; then
  echo "slurm.sh: node not idle after 30 s (state: '${state:-no answer}')"
  tail -n 20 "$DIR/slurmctld.log" "$DIR/slurmd.log" 2>/dev/null || true
  exit 1
fi

echo "slurm.sh: SLURM ready (node localhost ${NODE_HW[*]}; slurmctld 127.0.0.1:$CTLD_PORT," \
  "slurmd :$SLURMD_PORT; pids $(cat "$DIR/munged.pid") $(cat "$DIR/slurmctld.pid") $(cat "$DIR/slurmd.pid"); dir $DIR)"
echo "export SLURM_CONF=$SLURM_CONF OMICSTWIN_TEST_SLURM=1 OMICSTWIN_TEST_SLURM_DIR=$DIR" >&3
