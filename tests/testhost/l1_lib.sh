# Helpers sourced by test scripts inside the L1 test host (tests/testhost/console.rs parses
# what they print).

# run NAME TIMEOUT_S CMD [ARGS...]
# Runs CMD (stdin closed, under a timeout) and prints its stdout, stderr and exit status in
# sections the harness collects as a `CommandRun`. NAME must be one word.
run() {
    _name=$1
    _timeout=$2
    shift 2
    echo "### TESTHOST run-begin $_name uptime=$(cut -d' ' -f1 /proc/uptime)"
    # A heartbeat while CMD runs: the harness takes a console silent for 60 s as a frozen L1.
    ( while :; do
        sleep 20
        echo "### TESTHOST heartbeat $_name uptime=$(cut -d' ' -f1 /proc/uptime)"
    done ) &
    _beat=$!
    timeout -s KILL "$_timeout" "$@" > "/tmp/$_name.out" 2> "/tmp/$_name.err" < /dev/null
    _rc=$?
    kill "$_beat" 2>/dev/null
    wait "$_beat" 2>/dev/null
    _end=$(cut -d' ' -f1 /proc/uptime)
    echo "### TESTHOST stdout $_name"
    cat "/tmp/$_name.out"
    echo
    echo "### TESTHOST stderr $_name"
    cat "/tmp/$_name.err"
    echo
    echo "### TESTHOST run-end $_name rc=$_rc uptime=$_end"
}

# scenario NAME PASS|FAIL [DETAIL...]: a free-form verdict line.
scenario() {
    _name=$1
    shift
    echo "### SCENARIO $_name $*"
}
