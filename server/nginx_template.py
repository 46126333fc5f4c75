"""The nginx config template: rendered by server.nginx as docs/nginx.conf (production values) and as the
config `make run-edge` runs (local values). `{{name}}` marks a value; everything else is literal nginx.
"""

TEMPLATE = r"""# nginx in front of the catalog API (one or many instances). This file goes inside `http { }`
# (e.g. as /etc/nginx/conf.d/catalog-api.conf; the main config should allow >= 4096 worker_connections).
# It is generated: `python -m server.nginx --production > docs/nginx.conf` renders the template in
# server/nginx_template.py, the same one `make run-edge` runs with local values (a test checks they agree).
# Why it must be there:
#  - Slow clients: Robyn (actix) has no header or body timeout and keeps a connection open for a client that
#    trickles its headers; nginx holds those cheaply, cuts them after the timeouts below, and forwards only
#    complete requests.
#  - Body size: Robyn buffers the whole body before any Python runs (its payload limit is not enforced in
#    0.88), so the limit must be enforced before it: client_max_body_size answers 413 at the edge.
#  - Requests Robyn answers outside our error model, before any handler: methods it does not route
#    (QUERY, PROPFIND: 405 text/plain) and multipart/form-data it cannot parse (no boundary, or a body
#    that does not match it: 500 text/plain). nginx answers unknown methods and boundary-less multipart
#    itself, replaces any 500 from upstream with the API's 500 body, and sends all its own errors as the
#    API's problem+json bodies (en + ar).
#  - TLS, HTTP/2 to clients, and spreading load over instances (the API keeps no state in a process:
#    invalidation goes through PostgreSQL LISTEN/NOTIFY, limits and pages through Redis).
# Set TRUSTED_PROXIES to this proxy's address so the API rate-limits the real client from X-Forwarded-For.

# One request id through both logs: the client's X-Request-ID when the API would accept it, else nginx's.
map $http_x_request_id $catalog_request_id {
    "~^[A-Za-z0-9._-]{1,128}$"  $http_x_request_id;
    default                     $request_id;
}

# Methods the API routes; it answers 404 or 405 (with Allow) for them itself. Others are answered here.
map $request_method $catalog_method_known {
{{methods}}
    default 0;
}

# multipart is only parseable with a boundary, and GET/HEAD/OPTIONS carry no body at all.
map "$request_method $http_content_type" $catalog_bad_content_type {
    "~*^(GET|HEAD|OPTIONS) +multipart/"                   1;
    "~*^[A-Z_-]+ +multipart/(?!.*;\s*boundary=[^;\s])"    1;
    default                                               0;
}

# The bodies of nginx's own answers: server/errors.py's texts, with the request id.
map $status $catalog_problem {
{{problems}}
}

map $status $catalog_problem_allow {
    405     "{{allow}}";
    default "";
}

map $status $catalog_problem_retry {
    502     1;
    503     1;
    504     1;
    default "";
}

log_format catalog_edge '$remote_addr [$time_iso8601] "$request" $status $body_bytes_sent '
                        'rid=$catalog_request_id upstream=$upstream_addr rt=$request_time '
                        'urt=$upstream_response_time';

upstream catalog_api {
    server {{upstream}} max_fails=3 fail_timeout=5s;
    # server 10.0.0.12:8000;   # more instances: same DATABASE_URL and REDIS_URL
    keepalive 128;             # reuse upstream connections (no TCP handshake per request)
}

server {
    listen {{listen}};
    server_name _;
    server_tokens off;
    access_log {{access_log}} catalog_edge;

    # Slow clients and oversized requests end here, not in a Robyn worker.
    client_header_timeout {{header_timeout}};     # = EDGE_HEADER_TIMEOUT_S: stalled headers are cut
    client_body_timeout {{body_timeout}};       # = EDGE_BODY_TIMEOUT_S: so is a stalled body
    send_timeout 30s;
    keepalive_timeout 30s;
    keepalive_requests 10000;
    client_max_body_size {{max_body}};            # = MAX_BODY_BYTES (the API checks it again)
    client_body_buffer_size 64k;
    large_client_header_buffers 4 {{header_buffer}};  # = MAX_HEADER_BYTES: longer lines get 414 or 431 here

    # Whatever nginx answers itself is a problem+json body (a URI, not a named location: errors in the
    # request line leave no URI, and nginx redirects those only to a URI).
    error_page 400 404 405 408 413 414 415 500 501 502 503 504 505 /.edge/problem;
    error_page 494 =431 /.edge/problem;

    if ($uri = /.edge/problem) {
        break;                                   # an error page already: skip the checks below
    }
    if ($catalog_method_known = 0) {
        return 405;
    }
    if ($catalog_bad_content_type) {
        return 415;
    }

    location / {
        # Here only what happens while proxying: bodies too large or too slow, the API unreachable, and
        # 500s, whose text/plain form Robyn sends itself (e.g. for a multipart body that does not parse);
        # the API's own 500 body is the same one. Its other errors (400, 404, 405 with Allow, 429, 503)
        # pass through with their headers.
        error_page 408 413 500 502 504 /.edge/problem;
        proxy_intercept_errors on;
        proxy_pass http://catalog_api;
        proxy_http_version 1.1;
        proxy_request_buffering on;                  # the whole body arrives before the upstream sees it
        proxy_set_header Connection "";
        proxy_set_header Host $host;
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        proxy_set_header X-Forwarded-Proto $scheme;
        proxy_set_header X-Request-ID $catalog_request_id;
        proxy_set_header Content-Type $content_type;  # exactly the one checked above, never a second
        proxy_connect_timeout 2s;
        proxy_read_timeout 30s;
        # The API compresses bodies (zstd/br/gzip) once per cache fill (Vary: Accept-Encoding).
        gzip off;

        # Image uploads take up to IMAGE_MAX_BYTES (the rest of the proxy set-up is inherited).
        location ~ ^/api/admin/products/[^/]+/image$ {
            client_max_body_size {{max_image}};
            proxy_pass http://catalog_api;
        }
    }

    location = /.edge/problem {
        internal;
        types { }
        default_type application/problem+json;
        add_header X-Request-ID $catalog_request_id always;
        add_header Cache-Control no-store always;
        add_header Content-Security-Policy "{{csp}}" always;
        add_header X-Content-Type-Options nosniff always;
        add_header Referrer-Policy no-referrer always;
        add_header X-Frame-Options DENY always;
        add_header Cross-Origin-Resource-Policy cross-origin always;
        add_header Allow $catalog_problem_allow always;
        add_header Retry-After $catalog_problem_retry always;
        return 200 $catalog_problem;                 # sent with the error's status, not 200
    }

    # Images could also be served straight from shared storage, bypassing Python entirely:
    # location ~ "^/product-images/([A-Za-z0-9_-]{1,64})\.jpg$" {
    #     root /srv/catalog/uploads;  try_files /$1.jpg =404;
    #     expires 1d;  add_header X-Content-Type-Options nosniff;
    # }
}
"""
