#include "CLibCurl.h"

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
