#include "CLibCurl.h"

#include <stdint.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

const long clc_global_default = CURL_GLOBAL_DEFAULT;
const int clc_pause_continue = CURLPAUSE_CONT;
const size_t clc_writefunc_pause = CURL_WRITEFUNC_PAUSE;

CURLcode clc_easy_setopt_long(CURL *handle, CURLoption option, long value)
{
	return curl_easy_setopt(handle, option, value);
}

CURLcode clc_easy_setopt_string(CURL *handle, CURLoption option, const char *value)
{
	return curl_easy_setopt(handle, option, value);
}

CURLcode clc_easy_setopt_pointer(CURL *handle, CURLoption option, void *value)
{
	return curl_easy_setopt(handle, option, value);
}

CURLcode clc_easy_setopt_blob(CURL *handle, CURLoption option, const void *data, size_t length)
{
	struct curl_blob blob = { .data = (void *)data, .len = length, .flags = CURL_BLOB_COPY };

	return curl_easy_setopt(handle, option, &blob);
}

CURLcode clc_easy_setopt_write_function(CURL *handle,
					size_t (*function)(char *data, size_t size, size_t count, void *context))
{
	return curl_easy_setopt(handle, CURLOPT_WRITEFUNCTION, function);
}

CURLcode clc_easy_setopt_header_function(CURL *handle,
					 size_t (*function)(char *data, size_t size, size_t count, void *context))
{
	return curl_easy_setopt(handle, CURLOPT_HEADERFUNCTION, function);
}

CURLcode clc_easy_getinfo_long(CURL *handle, CURLINFO info, long *value)
{
	return curl_easy_getinfo(handle, info, value);
}

CURLMcode clc_multi_setopt_long(CURLM *multi, CURLMoption option, long value)
{
	return curl_multi_setopt(multi, option, value);
}

/* The timeout travels in the callback's context pointer itself: nothing to allocate or free. */
static int clc_sockopt_user_timeout(void *context, curl_socket_t fd, curlsocktype purpose)
{
	unsigned int packed = (unsigned int)(uintptr_t)context;
	unsigned int timeout_ms = packed >> 8;
	int probes = (int)(packed & 0xff);

	if (purpose != CURLSOCKTYPE_IPCXN)
		return CURL_SOCKOPT_OK;
	/* Failures only lose the faster detection, so they do not fail the connection. */
	(void)setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &timeout_ms, sizeof(timeout_ms));
	if (probes > 0)
		(void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &probes, sizeof(probes));
	return CURL_SOCKOPT_OK;
}

CURLcode clc_easy_set_tcp_user_timeout(CURL *handle, unsigned int timeout_ms, unsigned int keepalive_probes)
{
	CURLcode code;
	uintptr_t packed;

	if (timeout_ms == 0)
		return CURLE_OK;
	if (timeout_ms > 0xffffff)
		timeout_ms = 0xffffff;
	if (keepalive_probes > 0xff)
		keepalive_probes = 0xff;
	packed = ((uintptr_t)timeout_ms << 8) | keepalive_probes;
	code = curl_easy_setopt(handle, CURLOPT_SOCKOPTFUNCTION, clc_sockopt_user_timeout);
	if (code != CURLE_OK)
		return code;
	return curl_easy_setopt(handle, CURLOPT_SOCKOPTDATA, (void *)packed);
}
