# steady load on /plain for $1 seconds, one connection per request so both proxies get traffic
end=$((SECONDS+$1)); while [ $SECONDS -lt $end ]; do curl -s -o /dev/null -w '%{http_code}\n' http://127.0.0.1:20210/plain/l; done
