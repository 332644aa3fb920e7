/*
 * CLibCurl: libcurl's variadic curl_easy_setopt/curl_easy_getinfo/curl_multi_setopt
 * cannot be called from Swift; these typed wrappers can. Every symbol carries the clc_
 * prefix. The Kubernetes API transport (KubeAPI) is the only user.
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

#endif
