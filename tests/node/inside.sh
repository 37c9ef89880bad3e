# shellcheck shell=bash disable=SC2154  # here, repo and log come from run.sh
# Sourced by run.sh --inside <work folder> <bin folder> <cgroup name>, in a private mount namespace.
# Sets up the network namespace and the cgroups, starts the cluster, then runs checks.sh.
work="$2" bin="$3" cgroup="$4" sdk_test="$5"
netns="wiw-node-${cgroup##*-}"
node=wiw-node
node_ip=10.244.0.1
# The kubernetes Service IP lives on the namespace's loopback, so Pods reach the apiserver through
# the environment the kubelet gives them (KUBERNETES_SERVICE_HOST) without kube-proxy. The apiserver
# listens there only: 127.0.0.1:443 stays free for the token services of the SDK runs.
service_ip=10.96.0.1
# The EKS Pod Identity agent address, also on loopback: nothing sent there can leave. checks.sh
# removes it before the local overlay, whose agent DaemonSet puts it back (as on a kind node).
pod_identity_ip=169.254.170.23
pids=()
phase_start=$SECONDS
phase() { log "$1: $((SECONDS - phase_start)) s"; phase_start=$SECONDS; }

# Whether a daemon has not exited yet (an exited child stays a zombie, state Z, until waited for).
running() {
  local pid
  for pid in "${pids[@]}"; do
    [[ "$(cut -d' ' -f3 "/proc/$pid/stat" 2>/dev/null)" =~ ^[^Z]$ ]] && return 0
  done
  return 1
}
cleanup() {
  local status=$?
  # Pods first, so the kubelet and containerd stop their containers; then the daemons, newest first.
  if [[ -S "$work/containerd/containerd.sock" ]]; then
    local task
    for task in $(ctr --address "$work/containerd/containerd.sock" -n k8s.io tasks ls -q 2>/dev/null); do
      ctr --address "$work/containerd/containerd.sock" -n k8s.io tasks kill -s SIGKILL "$task" >/dev/null 2>&1 || true
    done
  fi
  local i t0=$SECONDS
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do kill "${pids[i]}" 2>/dev/null || true; done
  # The state is thrown away: whatever has not stopped after 3 s is killed.
  while ((SECONDS - t0 < 3)) && running; do sleep 0.2; done
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do kill -9 "${pids[i]}" 2>/dev/null || true; done
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do wait "${pids[i]}" 2>/dev/null || true; done
  ip netns delete "$netns" 2>/dev/null || true
  log "cleanup: $((SECONDS - t0)) s"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- cgroups: one tree per run; the daemons (and the shims and containers they start) stay inside,
# so run.sh can kill whatever survives. The kubelet's cgroupRoot is the same tree.
if [[ "$(stat -fc %T /sys/fs/cgroup)" == cgroup2fs ]]; then
  mkdir -p "/sys/fs/cgroup/$cgroup/system"
  # Delegate every controller the root enables; processes live only in the leaf system/.
  for c in $(cat /sys/fs/cgroup/cgroup.subtree_control); do
    echo "+$c" > "/sys/fs/cgroup/$cgroup/cgroup.subtree_control"
  done
  echo $$ > "/sys/fs/cgroup/$cgroup/system/cgroup.procs"
else
  for hierarchy in /sys/fs/cgroup/*/; do
    [[ -f "${hierarchy}cgroup.procs" ]] || continue
    mkdir -p "${hierarchy}${cgroup}/system"
    if [[ -f "${hierarchy}cpuset.cpus" ]]; then
      # A new cpuset is empty: copy the parent's CPUs and memory nodes.
      for f in cpuset.cpus cpuset.mems; do
        cat "${hierarchy}$f" > "${hierarchy}${cgroup}/$f"
        cat "${hierarchy}$f" > "${hierarchy}${cgroup}/system/$f"
      done
    fi
    echo $$ > "${hierarchy}${cgroup}/system/cgroup.procs"
  done
fi

# --- paths the kubelet, containerd and the CNI plugins use whatever they are told: bind the test's
# folder over them in this mount namespace. Mount points made here are listed for run.sh to remove.
for dir in /var/lib/kubelet /var/log/pods /var/log/containers /var/lib/cni /run/containerd /opt/containerd; do
  if [[ ! -d "$dir" ]]; then
    mkdir -p "$dir"
    echo "$dir" >> "$work/created-mount-points"
  fi
  mkdir -p "$work/fixed$dir"
  mount --bind "$work/fixed$dir" "$dir"
done
# Cloud host names resolve only to this namespace's loopback, where the token services of the SDK
# runs listen; anything else fails to connect.
cp /etc/hosts "$work/hosts"
cat >> "$work/hosts" <<EOF
127.0.0.1 sts.amazonaws.com sts.us-west-2.amazonaws.com sts.us-east-1.amazonaws.com
127.0.0.1 login.microsoftonline.com sts.googleapis.com iamcredentials.googleapis.com oauth2.googleapis.com
127.0.0.1 metadata.google.internal
EOF
mount --bind "$work/hosts" /etc/hosts

# --- the network namespace: loopback and a bridge for the node and the Pods, no route out.
ip netns add "$netns"
nsx() { nsenter --net="/run/netns/$netns" "$@"; }
nsx ip link set lo up
nsx ip addr add "$service_ip/32" dev lo
nsx ip addr add "$pod_identity_ip/32" dev lo
nsx ip link add wiw0 type bridge
nsx ip addr add "$node_ip/24" dev wiw0
# A veth with one end on the bridge gives it carrier before the first Pod exists.
nsx ip link add wiw-up type veth peer name wiw-up-peer
nsx ip link set wiw-up master wiw0
nsx ip link set wiw-up up
nsx ip link set wiw-up-peer up
nsx ip link set wiw0 up
if nsx ip route show | grep -q '^default'; then
  log "FAIL: the network namespace has a default route"
  exit 1
fi

# --- certificates and keys.
pki="$work/pki"
mkdir -p "$pki"
(
  cd "$pki" || exit
  openssl ecparam -name prime256v1 -genkey -noout -out ca.key 2>/dev/null
  openssl req -x509 -new -key ca.key -days 2 -subj /CN=wiw-node-ca -out ca.crt 2>/dev/null
  openssl ecparam -name prime256v1 -genkey -noout -out apiserver.key 2>/dev/null
  openssl req -new -key apiserver.key -subj /CN=kube-apiserver -out apiserver.csr 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1,IP:%s,IP:%s,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local\nextendedKeyUsage=serverAuth\n' \
    "$node_ip" "$service_ip" > apiserver.ext
  openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 \
    -extfile apiserver.ext -out apiserver.crt 2>/dev/null
  openssl ecparam -name prime256v1 -genkey -noout -out sa.key 2>/dev/null
  openssl ec -in sa.key -pubout -out sa.pub 2>/dev/null
  token="$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')"
  printf '%s,admin,admin,system:masters\n' "$token" > tokens.csv
  printf '%s' "$token" > admin.token
)
kubeconfig="$work/admin.kubeconfig"
cat > "$kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters: [{name: node, cluster: {server: "https://$service_ip:443", certificate-authority: "$pki/ca.crt"}}]
users: [{name: admin, user: {token: "$(cat "$pki/admin.token")"}}]
contexts: [{name: node, context: {cluster: node, user: admin}}]
current-context: node
EOF

mkdir -p "$work/logs"
# start NAME COMMAND...: runs a daemon in the network namespace, logging to logs/NAME.log.
start() {
  local name="$1"
  shift
  # exec, so that the pid is the daemon's own and it does not inherit this shell's traps.
  (
    trap - EXIT INT TERM
    exec nsenter --net="/run/netns/$netns" "$@"
  ) > "$work/logs/$name.log" 2>&1 &
  pids+=($!)
}
# wait_for WHAT SECONDS COMMAND...: polls COMMAND once a second.
wait_for() {
  local what="$1" limit="$2" t0=$SECONDS
  shift 2
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS - t0 >= limit)); then
      log "FAIL: ${what} not within ${limit} s"
      return 1
    fi
    sleep 1
  done
}
k() { nsx "$bin/kubectl" --kubeconfig "$kubeconfig" "$@"; }

start etcd "$bin/etcd" --data-dir "$work/etcd" --listen-client-urls http://127.0.0.1:2379 \
  --listen-peer-urls http://127.0.0.1:2380
start kube-apiserver "$bin/kube-apiserver" \
  --etcd-servers=http://127.0.0.1:2379 \
  --bind-address="$service_ip" --secure-port=443 --advertise-address="$node_ip" \
  --cert-dir="$pki/apiserver" \
  --tls-cert-file="$pki/apiserver.crt" --tls-private-key-file="$pki/apiserver.key" \
  --client-ca-file="$pki/ca.crt" --token-auth-file="$pki/tokens.csv" \
  --service-account-issuer=https://kubernetes.default.svc.cluster.local \
  --service-account-key-file="$pki/sa.pub" --service-account-signing-key-file="$pki/sa.key" \
  --service-cluster-ip-range=10.96.0.0/24 \
  --authorization-mode=RBAC --allow-privileged=true \
  --enable-aggregator-routing=true \
  --kubelet-preferred-address-types=InternalIP \
  --profiling=false --v=1
wait_for "kube-apiserver /readyz" 120 k get --raw /readyz
start kube-controller-manager "$bin/kube-controller-manager" --kubeconfig="$kubeconfig" \
  --leader-elect=false --bind-address=127.0.0.1 --cert-dir="$work/kube-controller-manager" \
  --root-ca-file="$pki/ca.crt" --service-account-private-key-file="$pki/sa.key" \
  --use-service-account-credentials=false --profiling=false
start kube-scheduler "$bin/kube-scheduler" --kubeconfig="$kubeconfig" \
  --leader-elect=false --bind-address=127.0.0.1 --profiling=false

# --- containerd: its own root, state, socket and CNI folders; restrict_oom_score_adj because root
# here may lack CAP_SYS_RESOURCE (runc fails "can't get final child's PID from pipe: EOF" otherwise).
mkdir -p "$work/containerd" "$work/cni/net.d"
cat > "$work/containerd/config.toml" <<EOF
version = 2
root = "$work/containerd/root"
state = "$work/containerd/state"
[grpc]
  address = "$work/containerd/containerd.sock"
[ttrpc]
  address = "$work/containerd/containerd.sock.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "$work/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "localhost/wiw-node/pause:test"
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "native"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$work/cni/net.d"
EOF
cat > "$work/cni/net.d/10-wiw-node.conflist" <<EOF
{"cniVersion": "0.4.0", "name": "wiw-node", "plugins": [{"type": "bridge", "bridge": "wiw0",
  "isGateway": true, "ipMasq": false, "hairpinMode": true,
  "ipam": {"type": "host-local", "dataDir": "$work/cni/ipam",
    "ranges": [[{"subnet": "10.244.0.0/24", "rangeStart": "10.244.0.10", "gateway": "$node_ip"}]],
    "routes": [{"dst": "0.0.0.0/0"}]}}]}
EOF
start containerd containerd --config "$work/containerd/config.toml"
ctr_() { ctr --address "$work/containerd/containerd.sock" -n k8s.io "$@"; }
wait_for "containerd" 60 ctr_ version
for image in pause busybox webhook; do
  ctr_ images import --snapshotter native "$work/images/$image.tar" >&2
done

# --- the kubelet: every folder it takes in the test's folder (/var/lib/kubelet is bound there too).
mkdir -p "$work/kubelet"
: > "$work/kubelet/resolv.conf"   # Pods get no name server: nothing to resolve outside
cat > "$work/kubelet/config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
containerRuntimeEndpoint: unix://$work/containerd/containerd.sock
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: /$cgroup
failSwapOn: false
address: $node_ip
readOnlyPort: 0
authentication: {anonymous: {enabled: true}, webhook: {enabled: false}}
authorization: {mode: AlwaysAllow}
podLogsDir: $work/logs/pods
resolvConf: $work/kubelet/resolv.conf
clusterDomain: cluster.local
# The machine is shared: never evict or garbage-collect the test's images for disk or memory.
evictionHard: {memory.available: "1Mi", nodefs.available: "1%", imagefs.available: "1%", nodefs.inodesFree: "1%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
localStorageCapacityIsolation: false
syncFrequency: 10s
EOF
start kubelet "$bin/kubelet" --config="$work/kubelet/config.yaml" --kubeconfig="$kubeconfig" \
  --root-dir=/var/lib/kubelet --cert-dir="$work/kubelet/pki" \
  --node-ip="$node_ip" --hostname-override="$node" --v=1
wait_for "node $node Ready" 180 k wait --for=condition=Ready "node/$node" --timeout=1s
phase "cluster up (node Ready)"

# shellcheck source=tests/node/checks.sh
source "${here}/checks.sh"
