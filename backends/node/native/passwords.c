/*
 * bcrypt and argon2id for the Node runtime, over the C libraries Debian ships: libcrypt
 * (libxcrypt, whose crypt_rn speaks `$2b$`) and libargon2 (the reference implementation).
 * Node's own crypto has neither, and no npm registry can be reached where this is built.
 *
 * Node-API only (no V8 or libuv headers), so one build loads in every Node from 18 on. Each
 * call is an async work item: the hash runs on libuv's thread pool, never on the event loop
 * (CONTRACT.md §11), and the JavaScript side gets a Promise.
 *
 *   bcryptHash(secret: Buffer, cost: number, salt: Buffer(16)) -> Promise<string>  "$2b$CC$…"
 *   bcryptVerify(secret: Buffer, stored: string) -> Promise<boolean>
 *   argon2idHash(password: Buffer, salt: Buffer(16)) -> Promise<string>  the PHC string
 *   argon2idVerify(password: Buffer, stored: string) -> Promise<boolean>
 *
 * A stored value that is not of the mode's form verifies as false, never as an error.
 */
#define NAPI_VERSION 8
#include <argon2.h>
#include <crypt.h>
#include <node_api.h>
#include <stdlib.h>
#include <string.h>

#define ARGON2_T 2
#define ARGON2_M 19456
#define ARGON2_P 1
#define ARGON2_HASH_LEN 32
#define MAX_STORED 512

enum op { BCRYPT_HASH, BCRYPT_VERIFY, ARGON2_HASH, ARGON2_VERIFY };

struct job {
    enum op op;
    napi_async_work work;
    napi_deferred deferred;
    char *secret; /* NUL-terminated copy */
    size_t secret_len;
    unsigned char salt[16];
    int cost;
    char stored[MAX_STORED];
    char out[MAX_STORED];
    int ok;    /* verify: 1 = match */
    int error; /* hash: non-zero = failure, message in out */
};

static int const_eq(const char *a, const char *b) {
    size_t la = strlen(a), lb = strlen(b);
    unsigned char d = la != lb;
    size_t n = la < lb ? la : lb;
    for (size_t i = 0; i < n; i++) d |= (unsigned char)(a[i] ^ b[i]);
    return d == 0;
}

static int is_bcrypt(const char *s) {
    return strlen(s) == 60 && s[0] == '$' && s[1] == '2' &&
           (s[2] == 'a' || s[2] == 'b' || s[2] == 'y') && s[3] == '$';
}

static void execute(napi_env env, void *data) {
    (void)env;
    struct job *j = data;
    switch (j->op) {
    case BCRYPT_HASH: {
        char setting[CRYPT_GENSALT_OUTPUT_SIZE];
        struct crypt_data cd;
        memset(&cd, 0, sizeof cd);
        if (!crypt_gensalt_rn("$2b$", (unsigned long)j->cost, (const char *)j->salt, 16, setting,
                              sizeof setting)) {
            j->error = 1;
            strcpy(j->out, "crypt_gensalt_rn failed");
            break;
        }
        const char *h = crypt_rn(j->secret, setting, &cd, sizeof cd);
        if (!h || h[0] == '*' || strlen(h) >= sizeof j->out) {
            j->error = 1;
            strcpy(j->out, "crypt_rn failed");
            break;
        }
        strcpy(j->out, h);
        break;
    }
    case BCRYPT_VERIFY: {
        struct crypt_data cd;
        memset(&cd, 0, sizeof cd);
        if (!is_bcrypt(j->stored)) break;
        const char *h = crypt_rn(j->secret, j->stored, &cd, sizeof cd);
        j->ok = h && h[0] != '*' && const_eq(h, j->stored);
        break;
    }
    case ARGON2_HASH: {
        int rc = argon2id_hash_encoded(ARGON2_T, ARGON2_M, ARGON2_P, j->secret, j->secret_len,
                                       j->salt, sizeof j->salt, ARGON2_HASH_LEN, j->out,
                                       sizeof j->out);
        if (rc != ARGON2_OK) {
            j->error = 1;
            strncpy(j->out, argon2_error_message(rc), sizeof j->out - 1);
        }
        break;
    }
    case ARGON2_VERIFY:
        if (strncmp(j->stored, "$argon2id$", 10) != 0) break;
        j->ok = argon2id_verify(j->stored, j->secret, j->secret_len) == ARGON2_OK;
        break;
    }
}

static void complete(napi_env env, napi_status status, void *data) {
    struct job *j = data;
    napi_value v;
    if (status != napi_ok) {
        napi_value msg;
        napi_create_string_utf8(env, "the hash was cancelled", NAPI_AUTO_LENGTH, &msg);
        napi_create_error(env, NULL, msg, &v);
        napi_reject_deferred(env, j->deferred, v);
    } else if (j->op == BCRYPT_VERIFY || j->op == ARGON2_VERIFY) {
        napi_get_boolean(env, j->ok, &v);
        napi_resolve_deferred(env, j->deferred, v);
    } else if (j->error) {
        napi_value msg;
        napi_create_string_utf8(env, j->out, NAPI_AUTO_LENGTH, &msg);
        napi_create_error(env, NULL, msg, &v);
        napi_reject_deferred(env, j->deferred, v);
    } else {
        napi_create_string_utf8(env, j->out, NAPI_AUTO_LENGTH, &v);
        napi_resolve_deferred(env, j->deferred, v);
    }
    napi_delete_async_work(env, j->work);
    if (j->secret) {
        memset(j->secret, 0, j->secret_len);
        free(j->secret);
    }
    free(j);
}

static napi_value fail(napi_env env, const char *message) {
    napi_throw_type_error(env, NULL, message);
    return NULL;
}

/* Reads a Buffer argument into a fresh NUL-terminated copy. */
static int buffer_arg(napi_env env, napi_value v, struct job *j) {
    bool is;
    void *data;
    size_t len;
    if (napi_is_buffer(env, v, &is) != napi_ok || !is) return 0;
    if (napi_get_buffer_info(env, v, &data, &len) != napi_ok) return 0;
    j->secret = malloc(len + 1);
    if (!j->secret) return 0;
    memcpy(j->secret, data, len);
    j->secret[len] = 0;
    j->secret_len = len;
    return 1;
}

static int salt_arg(napi_env env, napi_value v, struct job *j) {
    bool is;
    void *data;
    size_t len;
    if (napi_is_buffer(env, v, &is) != napi_ok || !is ||
        napi_get_buffer_info(env, v, &data, &len) != napi_ok || len != sizeof j->salt)
        return 0;
    memcpy(j->salt, data, sizeof j->salt);
    return 1;
}

static napi_value start(napi_env env, napi_callback_info info, enum op op) {
    size_t argc = 3;
    napi_value argv[3], promise, name;
    size_t want = op == BCRYPT_HASH ? 3 : 2;
    if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < want)
        return fail(env, op == BCRYPT_HASH ? "secret, cost and salt are expected"
                                           : "two arguments are expected");
    struct job *j = calloc(1, sizeof *j);
    if (!j) return fail(env, "out of memory");
    j->op = op;
    if (!buffer_arg(env, argv[0], j)) {
        free(j);
        return fail(env, "the secret must be a Buffer");
    }
    if (op == BCRYPT_HASH) {
        int32_t cost;
        if (napi_get_value_int32(env, argv[1], &cost) != napi_ok || cost < 4 || cost > 31) {
            free(j->secret);
            free(j);
            return fail(env, "the cost must be a number from 4 to 31");
        }
        j->cost = cost;
        /* 16 random bytes from the caller: libcrypt turns them into bcrypt's 22 characters. */
        if (!salt_arg(env, argv[2], j)) {
            free(j->secret);
            free(j);
            return fail(env, "the salt must be a Buffer of 16 bytes");
        }
    } else if (op == ARGON2_HASH) {
        if (!salt_arg(env, argv[1], j)) {
            free(j->secret);
            free(j);
            return fail(env, "the salt must be a Buffer of 16 bytes");
        }
    } else {
        size_t len;
        if (napi_get_value_string_utf8(env, argv[1], j->stored, sizeof j->stored, &len) != napi_ok) {
            free(j->secret);
            free(j);
            return fail(env, "the stored value must be a string");
        }
        if (len >= sizeof j->stored - 1) j->stored[0] = 0; /* too long to be a hash */
    }
    napi_create_promise(env, &j->deferred, &promise);
    napi_create_string_utf8(env, "stacklab-password", NAPI_AUTO_LENGTH, &name);
    napi_create_async_work(env, NULL, name, execute, complete, j, &j->work);
    napi_queue_async_work(env, j->work);
    return promise;
}

static napi_value bcrypt_hash(napi_env env, napi_callback_info info) {
    return start(env, info, BCRYPT_HASH);
}
static napi_value bcrypt_verify(napi_env env, napi_callback_info info) {
    return start(env, info, BCRYPT_VERIFY);
}
static napi_value js_argon2_hash(napi_env env, napi_callback_info info) {
    return start(env, info, ARGON2_HASH);
}
static napi_value js_argon2_verify(napi_env env, napi_callback_info info) {
    return start(env, info, ARGON2_VERIFY);
}

static napi_value init(napi_env env, napi_value exports) {
    napi_property_descriptor props[] = {
        {"bcryptHash", NULL, bcrypt_hash, NULL, NULL, NULL, napi_default, NULL},
        {"bcryptVerify", NULL, bcrypt_verify, NULL, NULL, NULL, napi_default, NULL},
        {"argon2idHash", NULL, js_argon2_hash, NULL, NULL, NULL, napi_default, NULL},
        {"argon2idVerify", NULL, js_argon2_verify, NULL, NULL, NULL, napi_default, NULL},
    };
    napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
    return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
