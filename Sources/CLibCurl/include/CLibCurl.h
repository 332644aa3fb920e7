/*
 * CLibCurl: libcurl's variadic curl_easy_setopt/curl_easy_getinfo/curl_multi_setopt
 * cannot be called from Swift; these typed wrappers can. Every symbol carries the clc_
 * prefix. Macros that Swift does not import are exposed as constants. The Kubernetes API
 * transport (KubeAPI) is the only user.
 */
#ifndef CLIBCURL_H
#define CLIBCURL_H

#include <curl/curl.h>

CURLcode clc_easy_setopt_long(CURL *handle, CURLoption option, long value);
CURLcode clc_easy_setopt_string(CURL *handle, CURLoption option, const char *value);
CURLcode clc_easy_setopt_pointer(CURL *handle, CURLoption option, void *value);
CURLcode clc_easy_setopt_blob(CURL *handle, CURLoption option, const void *data, size_t length);
CURLcode clc_easy_setopt_write_function(CURL *handle,
					size_t (*function)(char *data, size_t size, size_t count, void *context));
CURLcode clc_easy_setopt_header_function(CURL *handle,
					 size_t (*function)(char *data, size_t size, size_t count, void *context));
CURLcode clc_easy_getinfo_long(CURL *handle, CURLINFO info, long *value);
CURLMcode clc_multi_setopt_long(CURLM *multi, CURLMoption option, long value);

/*
 * Bounds how long unacknowledged data or unanswered keepalive probes may keep a TCP
 * connection alive (TCP_USER_TIMEOUT, plus TCP_KEEPCNT so that the keepalive probes fit
 * in that time). libcurl has options for the keepalive idle time and interval but not
 * for these two, so they are set from a CURLOPT_SOCKOPTFUNCTION. 0 leaves the kernel's
 * defaults (which take about 15 minutes to declare a silent peer dead).
 */
CURLcode clc_easy_set_tcp_user_timeout(CURL *handle, unsigned int timeout_ms, unsigned int keepalive_probes);

/* CURL_GLOBAL_DEFAULT, CURLPAUSE_CONT and CURL_WRITEFUNC_PAUSE are macros Swift does not import. */
extern const long clc_global_default;
extern const int clc_pause_continue;
extern const size_t clc_writefunc_pause;

#endif
